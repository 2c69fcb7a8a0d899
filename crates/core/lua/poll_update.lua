-- poll_update: records a non-terminal poll answer (progress) and schedules the next poll. A task that is no
-- longer running (finished by a webhook or another attempt) leaves the schedule instead.
-- KEYS[1] task hash, KEYS[2] poll schedule, KEYS[3] batch events stream
-- ARGV[1] now (ms), ARGV[2] attempt, ARGV[3] progress (0-100), ARGV[4] next due (ms), ARGV[5] task id,
-- ARGV[6] error of a failed status call ('' when the call succeeded)
-- Returns 1 when rescheduled, 0 when the task left the schedule.
local t = redis.call('HMGET', KEYS[1], TASK.status, TASK.attempts, TASK.progress)
if t[1] ~= 'running' or t[2] ~= ARGV[2] then
  if t[1] == false or is_terminal(t[1]) then
    redis.call('ZREM', KEYS[2], ARGV[5])
  end
  return 0
end
redis.call('HINCRBY', KEYS[1], TASK.polls, 1)
if ARGV[6] == '' then
  redis.call('HSET', KEYS[1], TASK.poll_errors, 0)
else
  redis.call('HINCRBY', KEYS[1], TASK.poll_errors, 1)
  redis.call('HSET', KEYS[1], TASK.last_error, ARGV[6])
end
if t[3] ~= ARGV[3] then
  redis.call('HSET', KEYS[1], TASK.progress, ARGV[3], TASK.updated_at, ARGV[1])
  emit_task(KEYS[3], KEYS[1])
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[5])
return 1
