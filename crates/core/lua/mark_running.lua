-- mark_running: the provider accepted tasks (submitting -> running); records each remote id and schedules the
-- first poll. Fenced by attempt: a stale submitter cannot overwrite a newer attempt. (The lease field is left as
-- it is: it only means something while the task is `submitting`.) Several tasks of one partition go in one call.
-- KEYS[1] poll schedule (zset), then KEYS[2i] task hash and KEYS[2i+1] its batch events stream, for each task i
-- ARGV[1] now (ms), then for each task i: ARGV[4i-2] attempt, ARGV[4i-1] remote id, ARGV[4i] first poll due (ms),
-- ARGV[4i+1] provider name
-- Returns, per task in order, 1 when applied, 0 when the task had moved on.
local now = ARGV[1]
local applied = {}
-- One ZADD for the call: due time and task id of every task applied.
local schedule = {}
for i = 1, (#KEYS - 1) / 2 do
  local task_key, events_key = KEYS[2 * i], KEYS[2 * i + 1]
  local attempt, remote_id, due, provider = ARGV[4 * i - 2], ARGV[4 * i - 1], ARGV[4 * i], ARGV[4 * i + 1]
  local t = redis.call('HMGET', task_key, TASK_STATUS, TASK_ATTEMPTS, TASK_ID, TASK_INDEX, TASK_PROGRESS)
  if t[1] ~= 'submitting' or t[2] ~= attempt then
    applied[i] = 0
  else
    redis.call('HSET', task_key, TASK_STATUS, 'running', TASK_REMOTE_ID, remote_id, TASK_PROVIDER, provider,
      TASK_SUBMITTED_AT, now, TASK_UPDATED_AT, now, TASK_POLLS, '0', TASK_POLL_ERRORS, '0')
    schedule[#schedule + 1] = due
    schedule[#schedule + 1] = t[3]
    emit_task_values(events_key, t[3], t[4], 'running', t[5], t[2])
    applied[i] = 1
  end
end
if #schedule > 0 then
  redis.call('ZADD', KEYS[1], unpack(schedule))
end
return applied
