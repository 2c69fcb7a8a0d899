-- retry_later: a create failed in a way worth retrying: the task goes back to `queued` (submitting -> queued)
-- with the error recorded, and a retry is scheduled. The waiting retry holds no worker: it is an entry in the
-- partition's retry schedule, which the submitters' pump turns back into a submit message when it is due.
-- KEYS[1] task hash, KEYS[2] batch hash, KEYS[3] retry schedule (zset: task id scored by due ms),
-- KEYS[4] batch events stream
-- ARGV[1] now (ms), ARGV[2] attempt, ARGV[3] due (ms), ARGV[4] error text
-- Returns 1 when scheduled, 0 when the task had moved on (another attempt, cancelled, ...).
local t = redis.call('HMGET', KEYS[1], TASK_STATUS, TASK_ATTEMPTS, TASK_ID, TASK_INDEX, TASK_PROGRESS)
if t[1] ~= 'submitting' or t[2] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], TASK_STATUS, 'queued', TASK_LAST_ERROR, ARGV[4], TASK_RETRY_AT, ARGV[3],
  TASK_UPDATED_AT, ARGV[1])
local b = redis.call('HMGET', KEYS[2], BATCH_N_RUNNING, BATCH_N_QUEUED)
if b[1] then
  redis.call('HSET', KEYS[2], BATCH_N_RUNNING, int((tonumber(b[1]) or 0) - 1),
    BATCH_N_QUEUED, int((tonumber(b[2]) or 0) + 1))
end
redis.call('ZADD', KEYS[3], ARGV[3], t[3])
emit_task_values(KEYS[4], t[3], t[4], 'queued', t[5], t[2])
return 1
