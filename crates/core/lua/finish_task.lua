-- finish_task: moves a task to a terminal state (succeeded | failed | cancelled) and does everything that follows
-- in the batch's slot: counters, the chain hand-off (queue the next shot, or cancel the rest), and, when the last
-- task of the batch is terminal, batch -> settling (or stays cancelling) plus a settle message.
-- KEYS[1] task hash, KEYS[2] batch hash, KEYS[3] poll schedule, KEYS[4] submit stream, KEYS[5] batch events,
-- KEYS[6] settle stream, KEYS[7] retry schedule
-- ARGV[1] now (ms), ARGV[2] attempt ('' = any), ARGV[3] new status, ARGV[4] output url, ARGV[5] last frame url,
-- ARGV[6] failure code, ARGV[7] failure message, ARGV[8] task key prefix (the task id is appended),
-- ARGV[9] the batch's task id stem (a task's index is appended), ARGV[10] batch id
-- Returns 1 when applied, 0 when the task was already terminal or belongs to another attempt.
local t = redis.call('HMGET', KEYS[1], TASK_STATUS, TASK_ATTEMPTS, TASK_ID, TASK_INDEX, TASK_PRICE)
local status = t[1]
if not status or is_terminal(status) then
  return 0
end
if ARGV[2] ~= '' and t[2] ~= ARGV[2] then
  return 0
end
local now = ARGV[1]
local new_status = ARGV[3]
redis.call('HSET', KEYS[1], TASK_STATUS, new_status, TASK_FINISHED_AT, now, TASK_UPDATED_AT, now)
redis.call('HDEL', KEYS[1], TASK_LEASE_UNTIL)
redis.call('ZREM', KEYS[3], t[3])
redis.call('ZREM', KEYS[7], t[3])
if status == 'queued' then
  redis.call('HINCRBY', KEYS[2], BATCH_N_QUEUED, -1)
else
  redis.call('HINCRBY', KEYS[2], BATCH_N_RUNNING, -1)
end
if new_status == 'succeeded' then
  redis.call('HSET', KEYS[1], TASK_PROGRESS, 100, TASK_OUTPUT_URL, ARGV[4])
  if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], TASK_LAST_FRAME_URL, ARGV[5])
  end
  redis.call('HINCRBY', KEYS[2], BATCH_N_SUCCEEDED, 1)
  redis.call('HINCRBY', KEYS[2], BATCH_COST_SUCCEEDED, tonumber(t[5]))
elseif new_status == 'cancelled' then
  redis.call('HSET', KEYS[1], TASK_FAILURE_CODE, ARGV[6], TASK_FAILURE_MESSAGE, ARGV[7])
  redis.call('HINCRBY', KEYS[2], BATCH_N_CANCELLED, 1)
else
  redis.call('HSET', KEYS[1], TASK_FAILURE_CODE, ARGV[6], TASK_FAILURE_MESSAGE, ARGV[7])
  redis.call('HINCRBY', KEYS[2], BATCH_N_FAILED, 1)
end
emit_task(KEYS[5], KEYS[1])

local batch_id = ARGV[10]
local b = redis.call('HMGET', KEYS[2], BATCH_MODE, BATCH_TOTAL, BATCH_STATUS, BATCH_TRACEPARENT)
if b[1] == 'chain' then
  local total = tonumber(b[2])
  local first = tonumber(t[4]) + 1
  if new_status == 'succeeded' then
    -- The next shot starts from this one's last frame (unless it was cancelled meanwhile).
    if first < total and b[3] ~= 'cancelling' then
      local next_id = ARGV[9] .. first
      local next_key = ARGV[8] .. next_id
      if redis.call('HGET', next_key, TASK_STATUS) == 'queued' then
        if ARGV[5] ~= '' then
          redis.call('HSET', next_key, TASK_CHAIN_FIRST_FRAME, ARGV[5])
        end
        xadd_message(KEYS[4], submit_task_message(next_id, batch_id), b[4])
      end
    end
  else
    -- The chain is broken: no later shot can start.
    local why = 'an earlier shot of the chain ' .. (new_status == 'cancelled' and 'was cancelled' or 'failed')
    for j = first, total - 1 do
      local next_key = ARGV[8] .. ARGV[9] .. j
      if redis.call('HGET', next_key, TASK_STATUS) == 'queued' then
        redis.call('HSET', next_key, TASK_STATUS, 'cancelled', TASK_FINISHED_AT, now, TASK_UPDATED_AT, now,
          TASK_FAILURE_CODE, 'cancelled', TASK_FAILURE_MESSAGE, why)
        redis.call('HINCRBY', KEYS[2], BATCH_N_QUEUED, -1)
        redis.call('HINCRBY', KEYS[2], BATCH_N_CANCELLED, 1)
        emit_task(KEYS[5], next_key)
      end
    end
  end
end

local c = counts_of(KEYS[2])
if c.succeeded + c.failed + c.cancelled >= c.total then
  if b[3] ~= 'cancelling' then
    redis.call('HSET', KEYS[2], BATCH_STATUS, 'settling')
  end
  xadd_message(KEYS[6], settle_batch_message(batch_id), b[4])
end
emit_batch(KEYS[5], KEYS[2])
return 1
