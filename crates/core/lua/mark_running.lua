-- mark_running: the provider accepted the task (submitting -> running); records the remote id and schedules
-- the first poll. Fenced by attempt: a stale submitter cannot overwrite a newer attempt.
-- KEYS[1] task hash, KEYS[2] poll schedule (zset), KEYS[3] batch events stream
-- ARGV[1] now (ms), ARGV[2] attempt, ARGV[3] remote id, ARGV[4] first poll due (ms), ARGV[5] provider name
-- Returns 1 when applied, 0 when the task had moved on.
local t = redis.call('HMGET', KEYS[1], TASK.status, TASK.attempts, TASK.id)
if t[1] ~= 'submitting' or t[2] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], TASK.status, 'running', TASK.remote_id, ARGV[3], TASK.provider, ARGV[5],
  TASK.submitted_at, ARGV[1], TASK.updated_at, ARGV[1], TASK.polls, 0, TASK.poll_errors, 0)
redis.call('HDEL', KEYS[1], TASK.lease_until)
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), t[3])
emit_task(KEYS[3], KEYS[1])
return 1
