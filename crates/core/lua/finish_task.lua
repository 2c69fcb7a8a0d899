-- finish_task: moves a task to a terminal state (succeeded | failed | cancelled) and does everything that follows
-- in the batch's slot: counters, the chain hand-off (queue the next shot, or cancel the rest), and, when the last
-- task of the batch is terminal, batch -> settling (or stays cancelling) plus a settle message.
-- KEYS[1] task hash, KEYS[2] batch hash, KEYS[3] poll schedule, KEYS[4] submit stream, KEYS[5] batch events,
-- KEYS[6] settle stream, KEYS[7] retry schedule
-- ARGV[1] now (ms), ARGV[2] attempt ('' = any), ARGV[3] new status, ARGV[4] output url, ARGV[5] last frame url,
-- ARGV[6] failure code, ARGV[7] failure message, ARGV[8] task key prefix (the task id is appended),
-- ARGV[9] the batch's task id stem (a task's index is appended), ARGV[10] batch id
-- Returns 1 when applied, 0 when the task was already terminal or belongs to another attempt.
local t = redis.call('HMGET', KEYS[1], TASK_STATUS, TASK_ATTEMPTS, TASK_ID, TASK_INDEX, TASK_PRICE, TASK_PROGRESS)
local status = t[1]
if not status or is_terminal(status) then
  return 0
end
if ARGV[2] ~= '' and t[2] ~= ARGV[2] then
  return 0
end
local now = ARGV[1]
local new_status = ARGV[3]
local progress = t[6]
local fields = { TASK_STATUS, new_status, TASK_FINISHED_AT, now, TASK_UPDATED_AT, now }
if new_status == 'succeeded' then
  progress = 100
  fields[#fields + 1] = TASK_PROGRESS
  fields[#fields + 1] = progress
  fields[#fields + 1] = TASK_OUTPUT_URL
  fields[#fields + 1] = ARGV[4]
  if ARGV[5] ~= '' then
    fields[#fields + 1] = TASK_LAST_FRAME_URL
    fields[#fields + 1] = ARGV[5]
  end
else
  fields[#fields + 1] = TASK_FAILURE_CODE
  fields[#fields + 1] = ARGV[6]
  fields[#fields + 1] = TASK_FAILURE_MESSAGE
  fields[#fields + 1] = ARGV[7]
end
redis.call('HSET', KEYS[1], unpack(fields))
-- Only a running task is on the poll schedule, and only a queued one can wait on the retry schedule.
if status == 'running' then
  redis.call('ZREM', KEYS[3], t[3])
elseif status == 'queued' then
  redis.call('ZREM', KEYS[7], t[3])
end
emit_task_values(KEYS[5], t[3], t[4], new_status, progress, t[2])

-- The batch is read once and written once: its counters move in Lua, then go back in one HSET.
local b = redis.call('HMGET', KEYS[2], BATCH_MODE, BATCH_STATUS, BATCH_TRACEPARENT, BATCH_COST_SUCCEEDED,
  counter_fields())
local batch_status = b[2]
if not batch_status then
  return 1
end
local c = counts_from(b, 5)
if status == 'queued' then
  c.queued = c.queued - 1
else
  c.running = c.running - 1
end
c[new_status] = c[new_status] + 1
local cost_succeeded = tonumber(b[4]) or 0
if new_status == 'succeeded' then
  cost_succeeded = cost_succeeded + tonumber(t[5])
end

local batch_id = ARGV[10]
if b[1] == 'chain' then
  local first = tonumber(t[4]) + 1
  if new_status == 'succeeded' then
    -- The next shot starts from this one's last frame (unless it was cancelled meanwhile).
    if first < c.total and batch_status ~= 'cancelling' then
      local next_id = ARGV[9] .. first
      local next_key = ARGV[8] .. next_id
      if redis.call('HGET', next_key, TASK_STATUS) == 'queued' then
        if ARGV[5] ~= '' then
          redis.call('HSET', next_key, TASK_CHAIN_FIRST_FRAME, ARGV[5])
        end
        xadd_message(KEYS[4], submit_task_message(next_id, batch_id), b[3])
      end
    end
  else
    -- The chain is broken: no later shot can start.
    local why = 'an earlier shot of the chain ' .. (new_status == 'cancelled' and 'was cancelled' or 'failed')
    for j = first, c.total - 1 do
      local next_key = ARGV[8] .. ARGV[9] .. j
      if redis.call('HGET', next_key, TASK_STATUS) == 'queued' then
        redis.call('HSET', next_key, TASK_STATUS, 'cancelled', TASK_FINISHED_AT, now, TASK_UPDATED_AT, now,
          TASK_FAILURE_CODE, 'cancelled', TASK_FAILURE_MESSAGE, why)
        c.queued = c.queued - 1
        c.cancelled = c.cancelled + 1
        emit_task(KEYS[5], next_key)
      end
    end
  end
end

local finished = c.succeeded + c.failed + c.cancelled >= c.total
if finished and batch_status ~= 'cancelling' then
  batch_status = 'settling'
end
redis.call('HSET', KEYS[2], BATCH_STATUS, batch_status, BATCH_COST_SUCCEEDED, cost_succeeded, counter_values(c))
if finished then
  xadd_message(KEYS[6], settle_batch_message(batch_id), b[3])
end
emit_batch_counts(KEYS[5], batch_id, batch_status, c)
return 1
