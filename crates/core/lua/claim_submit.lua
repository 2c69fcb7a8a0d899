-- claim_submit: submitters take queued tasks (queued -> submitting), each with a new attempt. A task left in
-- `submitting` by a submitter that died (its lease ran out) is taken over the same way, with a new attempt.
-- Claims several tasks of one partition in one call; each batch is read and written once, however many of its
-- tasks are claimed. A claim sends no task event (`submitting` lasts one provider call; the stream's next word on
-- the task is `running`, or `queued` again on a retry): only the batch's first claim says `in_progress`.
-- KEYS[3i-2] task hash, KEYS[3i-1] its batch hash, KEYS[3i] its batch events stream, for each task i
-- ARGV[1] now (ms), ARGV[2] lease (ms)
-- Returns one answer per task, in order: {'ok', attempt}, or {'skip', current status} ({'skip', 'missing'} when
-- there is no such task; a queued task of a batch being cancelled is skipped too: the cancel finishes it). The
-- caller reads what it sends to the provider (model, spec, ...) itself, with plain HMGETs: those fields never
-- change once a task can be claimed, and a read through Lua costs Redis about twice a plain one.
local now = tonumber(ARGV[1])
local lease_until = int(now + tonumber(ARGV[2]))
local batches = {}
local order = {}
local answers = {}

local function batch_of(batch_key)
  local state = batches[batch_key]
  if not state then
    local b = redis.call('HMGET', batch_key, BATCH_STATUS, BATCH_ID, counter_fields())
    state = { status = b[1], id = b[2], counts = counts_from(b, 3), claimed = 0 }
    batches[batch_key] = state
    order[#order + 1] = batch_key
  end
  return state
end

for i = 1, #KEYS, 3 do
  local task_key, batch_key, events_key = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local t = redis.call('HMGET', task_key, TASK_STATUS, TASK_LEASE_UNTIL, TASK_ATTEMPTS)
  local status = t[1]
  local expired = status == 'submitting' and (tonumber(t[2]) or 0) < now
  local answer
  if not status then
    answer = { 'skip', 'missing' }
  elseif status ~= 'queued' and not expired then
    answer = { 'skip', status }
  else
    local batch = batch_of(batch_key)
    if batch.status == 'cancelling' then
      -- The cancel in progress finishes this task; nothing to submit.
      answer = { 'skip', status }
    else
      local attempt = (tonumber(t[3]) or 0) + 1
      redis.call('HSET', task_key, TASK_STATUS, 'submitting', TASK_ATTEMPTS, int(attempt), TASK_LEASE_UNTIL,
        lease_until, TASK_UPDATED_AT, ARGV[1], TASK_CLAIMED_AT, ARGV[1])
      if status == 'queued' then
        batch.counts.queued = batch.counts.queued - 1
        batch.counts.running = batch.counts.running + 1
        batch.claimed = batch.claimed + 1
        batch.events = events_key
      end
      answer = { 'ok', int(attempt) }
    end
  end
  answers[#answers + 1] = answer
end

for _, batch_key in ipairs(order) do
  local batch = batches[batch_key]
  if batch.claimed > 0 then
    if batch.status == 'queued' then
      batch.status = 'in_progress'
      redis.call('HSET', batch_key, BATCH_STATUS, batch.status, counter_values(batch.counts))
      emit_batch_counts(batch.events, batch.id, batch.status, batch.counts)
    else
      redis.call('HSET', batch_key, counter_values(batch.counts))
    end
  end
end
return answers
