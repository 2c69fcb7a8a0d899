-- renew_lease: a submitter still working on a task (waiting for provider permits, or on a slow create) moves its
-- lease on, so the task is not taken over while its holder is alive. Fenced by attempt: a lease already taken
-- over, or a task that moved on, is left as it is.
-- KEYS[1] task hash
-- ARGV[1] attempt, ARGV[2] the new end of the lease (ms)
-- Returns 1 when renewed, 0 when the task is no longer this attempt's.
local t = redis.call('HMGET', KEYS[1], TASK_STATUS, TASK_ATTEMPTS)
if t[1] ~= 'submitting' or t[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], TASK_LEASE_UNTIL, ARGV[2])
return 1
