-- poll_update: records a non-terminal poll answer (progress) and schedules the next poll. A task that is no
-- longer running (finished by a webhook or another attempt) leaves the schedule instead.
-- KEYS[1] task hash, KEYS[2] poll schedule, KEYS[3] batch events stream
-- ARGV[1] now (ms), ARGV[2] attempt, ARGV[3] progress (0-100), ARGV[4] next due (ms), ARGV[5] task id,
-- ARGV[6] error of a failed status call ('' when the call succeeded)
-- Returns 1 when rescheduled, 0 when the task left the schedule.
local t = redis.call('HMGET', KEYS[1], TASK_STATUS, TASK_ATTEMPTS, TASK_PROGRESS, TASK_POLLS, TASK_POLL_ERRORS,
  TASK_INDEX)
if t[1] ~= 'running' or t[2] ~= ARGV[2] then
  if t[1] == false or is_terminal(t[1]) then
    redis.call('ZREM', KEYS[2], ARGV[5])
  end
  return 0
end
local polls = (tonumber(t[4]) or 0) + 1
local fields = { TASK_POLLS, int(polls) }
if ARGV[6] == '' then
  fields[#fields + 1] = TASK_POLL_ERRORS
  fields[#fields + 1] = '0'
else
  fields[#fields + 1] = TASK_POLL_ERRORS
  fields[#fields + 1] = int((tonumber(t[5]) or 0) + 1)
  fields[#fields + 1] = TASK_LAST_ERROR
  fields[#fields + 1] = ARGV[6]
end
-- A task that never reported progress has no progress field: 0.
local moved = (t[3] or '0') ~= ARGV[3]
if moved then
  fields[#fields + 1] = TASK_PROGRESS
  fields[#fields + 1] = ARGV[3]
  fields[#fields + 1] = TASK_UPDATED_AT
  fields[#fields + 1] = ARGV[1]
end
redis.call('HSET', KEYS[1], unpack(fields))
if moved then
  emit_task_values(KEYS[3], ARGV[5], t[6], 'running', ARGV[3], t[2])
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return 1
