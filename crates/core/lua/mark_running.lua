-- mark_running: the provider accepted the task (submitting -> running); records the remote id and schedules
-- the first poll. Fenced by attempt: a stale submitter cannot overwrite a newer attempt. (The lease field is left
-- as it is: it only means something while the task is `submitting`.)
-- KEYS[1] task hash, KEYS[2] poll schedule (zset), KEYS[3] batch events stream
-- ARGV[1] now (ms), ARGV[2] attempt, ARGV[3] remote id, ARGV[4] first poll due (ms), ARGV[5] provider name
-- Returns 1 when applied, 0 when the task had moved on.
local t = redis.call('HMGET', KEYS[1], TASK_STATUS, TASK_ATTEMPTS, TASK_ID, TASK_INDEX, TASK_PROGRESS)
if t[1] ~= 'submitting' or t[2] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], TASK_STATUS, 'running', TASK_REMOTE_ID, ARGV[3], TASK_PROVIDER, ARGV[5],
  TASK_SUBMITTED_AT, ARGV[1], TASK_UPDATED_AT, ARGV[1], TASK_POLLS, 0, TASK_POLL_ERRORS, 0)
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), t[3])
emit_task_values(KEYS[3], t[3], t[4], 'running', t[5], t[2])
return 1
