-- poll_update: records a non-terminal poll answer (progress) and schedules the next poll. A task that is no
-- longer running (finished by a webhook or another attempt) leaves the schedule instead.
-- KEYS[1] task hash, KEYS[2] poll schedule, KEYS[3] batch events stream
-- ARGV[1] now (ms), ARGV[2] attempt, ARGV[3] progress (0-100), ARGV[4] next due (ms), ARGV[5] task id,
-- ARGV[6] error of a failed status call ('' when the call succeeded)
-- Returns 1 when rescheduled, 0 when the task left the schedule.
local t = redis.call('HMGET', KEYS[1], TASK_STATUS, TASK_ATTEMPTS, TASK_PROGRESS)
if t[1] ~= 'running' or t[2] ~= ARGV[2] then
  if t[1] == false or is_terminal(t[1]) then
    redis.call('ZREM', KEYS[2], ARGV[5])
  end
  return 0
end
redis.call('HINCRBY', KEYS[1], TASK_POLLS, 1)
if ARGV[6] == '' then
  redis.call('HSET', KEYS[1], TASK_POLL_ERRORS, 0)
else
  redis.call('HINCRBY', KEYS[1], TASK_POLL_ERRORS, 1)
  redis.call('HSET', KEYS[1], TASK_LAST_ERROR, ARGV[6])
end
if t[3] ~= ARGV[3] then
  redis.call('HSET', KEYS[1], TASK_PROGRESS, ARGV[3], TASK_UPDATED_AT, ARGV[1])
  emit_task(KEYS[3], KEYS[1])
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[5])
return 1
