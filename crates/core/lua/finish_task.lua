-- finish_task: moves tasks to a terminal state (succeeded | failed | cancelled) and does everything that follows
-- in the batch's slot: counters, the chain hand-off (queue the next shot, or cancel the rest), and, when the last
-- task of the batch is terminal, batch -> settling (or stays cancelling) plus a settle message. Several tasks of one
-- partition go in one call, each finished in turn as if alone; a batch is read at most once per call and written
-- once at its end, however many of its tasks the call finishes.
-- KEYS[1] poll schedule, KEYS[2] submit stream, KEYS[3] settle stream, KEYS[4] retry schedule (the partition's),
-- then KEYS[3i+2] task hash, KEYS[3i+3] its batch hash, KEYS[3i+4] its batch events stream, for each task i
-- ARGV[1] task key prefix (the task id is appended), then for each task i, from j = 9(i-1)+1:
-- ARGV[j+1] now (ms), ARGV[j+2] attempt ('' = any), ARGV[j+3] new status, ARGV[j+4] output url,
-- ARGV[j+5] last frame url, ARGV[j+6] failure code, ARGV[j+7] failure message, ARGV[j+8] batch id,
-- ARGV[j+9] the batch's task id stem (a task's index is appended)
-- Returns, per task in order, 1 when applied, 0 when the task was already terminal or belongs to another attempt.
local polls_key, submit_key, settle_key, retries_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local task_prefix = ARGV[1]
-- The batches this call touched, by key, and their keys in the order first touched.
local batches, touched = {}, {}
-- The task ids to take off the poll and retry schedules, one ZREM each for the call.
local unpolled, unretried = {}, {}

local function batch_of(batch_key)
  local batch = batches[batch_key]
  if not batch then
    local b = redis.call('HMGET', batch_key, BATCH_MODE, BATCH_STATUS, BATCH_TRACEPARENT, BATCH_COST_SUCCEEDED,
      counter_fields())
    batch = { mode = b[1], status = b[2], traceparent = b[3], cost_succeeded = tonumber(b[4]) or 0,
      counts = counts_from(b, 5), changed = false }
    batches[batch_key] = batch
    touched[#touched + 1] = batch_key
  end
  return batch
end

local function finish(task_key, batch_key, events_key, now, attempt, new_status, url, frame, code, message, batch_id,
    stem)
  local t = redis.call('HMGET', task_key, TASK_STATUS, TASK_ATTEMPTS, TASK_ID, TASK_INDEX, TASK_PRICE, TASK_PROGRESS)
  local status = t[1]
  if not status or is_terminal(status) then
    return 0
  end
  -- A task never claimed has no attempts field: attempt 0.
  if attempt ~= '' and (t[2] or '0') ~= attempt then
    return 0
  end
  local progress = t[6]
  local fields = { TASK_STATUS, new_status, TASK_FINISHED_AT, now, TASK_UPDATED_AT, now }
  if new_status == 'succeeded' then
    progress = '100'
    fields[#fields + 1] = TASK_PROGRESS
    fields[#fields + 1] = progress
    fields[#fields + 1] = TASK_OUTPUT_URL
    fields[#fields + 1] = url
    if frame ~= '' then
      fields[#fields + 1] = TASK_LAST_FRAME_URL
      fields[#fields + 1] = frame
    end
  else
    fields[#fields + 1] = TASK_FAILURE_CODE
    fields[#fields + 1] = code
    fields[#fields + 1] = TASK_FAILURE_MESSAGE
    fields[#fields + 1] = message
  end
  redis.call('HSET', task_key, unpack(fields))
  -- Only a running task is on the poll schedule, and only a queued one can wait on the retry schedule.
  if status == 'running' then
    unpolled[#unpolled + 1] = t[3]
  elseif status == 'queued' then
    unretried[#unretried + 1] = t[3]
  end

  -- The batch's counters move in Lua; they go back in one HSET per batch at the end of the call.
  local batch = batch_of(batch_key)
  local batch_status = batch.status
  if not batch_status then
    emit_task_values(events_key, t[3], t[4], new_status, progress, t[2])
    return 1
  end
  local c = batch.counts
  if status == 'queued' then
    c.queued = c.queued - 1
  else
    c.running = c.running - 1
  end
  c[new_status] = c[new_status] + 1
  emit_task_values(events_key, t[3], t[4], new_status, progress, t[2], c)
  if new_status == 'succeeded' then
    batch.cost_succeeded = batch.cost_succeeded + tonumber(t[5])
  end

  if batch.mode == 'chain' then
    local first = tonumber(t[4]) + 1
    if new_status == 'succeeded' then
      -- The next shot starts from this one's last frame (unless it was cancelled meanwhile).
      if first < c.total and batch_status ~= 'cancelling' then
        local next_id = stem .. first
        local next_key = task_prefix .. next_id
        if redis.call('HGET', next_key, TASK_STATUS) == 'queued' then
          if frame ~= '' then
            redis.call('HSET', next_key, TASK_CHAIN_FIRST_FRAME, frame)
          end
          xadd_message(submit_key, submit_task_message(next_id, batch_id), batch.traceparent)
        end
      end
    else
      -- The chain is broken: no later shot can start.
      local why = 'an earlier shot of the chain ' .. (new_status == 'cancelled' and 'was cancelled' or 'failed')
      for j = first, c.total - 1 do
        local next_key = task_prefix .. stem .. j
        if redis.call('HGET', next_key, TASK_STATUS) == 'queued' then
          redis.call('HSET', next_key, TASK_STATUS, 'cancelled', TASK_FINISHED_AT, now, TASK_UPDATED_AT, now,
            TASK_FAILURE_CODE, 'cancelled', TASK_FAILURE_MESSAGE, why)
          c.queued = c.queued - 1
          c.cancelled = c.cancelled + 1
          emit_task(events_key, next_key)
        end
      end
    end
  end

  local finished = c.succeeded + c.failed + c.cancelled >= c.total
  if finished and batch_status ~= 'cancelling' then
    batch_status = 'settling'
  end
  batch.changed = true
  if finished then
    -- Once per batch: its other tasks are terminal now, so no later task of this call gets here for it.
    xadd_message(settle_key, settle_batch_message(batch_id), batch.traceparent)
  end
  if batch_status ~= batch.status then
    batch.status = batch_status
    emit_batch_counts(events_key, batch_id, batch_status, c)
  end
  return 1
end

local applied = {}
for i = 1, (#KEYS - 4) / 3 do
  local k, a = 3 * i + 2, 9 * (i - 1) + 1
  applied[i] = finish(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4],
    ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9])
end
if #unpolled > 0 then
  redis.call('ZREM', polls_key, unpack(unpolled))
end
if #unretried > 0 then
  redis.call('ZREM', retries_key, unpack(unretried))
end
for _, batch_key in ipairs(touched) do
  local batch = batches[batch_key]
  if batch.changed then
    redis.call('HSET', batch_key, BATCH_STATUS, batch.status, BATCH_COST_SUCCEEDED, int(batch.cost_succeeded),
      counter_values(batch.counts))
  end
end
return applied
