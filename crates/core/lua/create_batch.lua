-- create_batch: writes a batch and its tasks and queues the tasks that may start now.
-- KEYS[1] batch hash, KEYS[2] submit stream of the batch's partition, KEYS[3] batch events stream,
-- KEYS[4] the partition's open batches (zset by creation ms; the sweeper walks it)
-- ARGV[1] batch fields (JSON object of strings), ARGV[2] tasks (JSON array of objects of strings, each with its id),
-- ARGV[3] task key prefix (the task id is appended)
-- Returns 1 when created, 0 when the batch already existed (idempotent replay).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local batch = cjson.decode(ARGV[1])
local tasks = cjson.decode(ARGV[2])
-- One HSET per hash: a flat field/value list.
local function hset_all(key, object)
  local flat = {}
  for field, value in pairs(object) do
    flat[#flat + 1] = field
    flat[#flat + 1] = value
  end
  redis.call('HSET', key, unpack(flat))
end

hset_all(KEYS[1], batch)
for i, task in ipairs(tasks) do
  local task_id = task[TASK_ID]
  hset_all(ARGV[3] .. task_id, task)
  -- chain mode starts with the first shot only; the next one is queued when its predecessor succeeds
  if batch[BATCH_MODE] ~= 'chain' or i == 1 then
    xadd_message(KEYS[2], submit_task_message(task_id, batch[BATCH_ID]), batch[BATCH_TRACEPARENT])
  end
end
redis.call('ZADD', KEYS[4], tonumber(batch[BATCH_CREATED_AT]), batch[BATCH_ID])
local counters = {}
for i, field in ipairs({ counter_fields() }) do
  counters[i] = batch[field]
end
emit_batch_counts(KEYS[3], batch[BATCH_ID], batch[BATCH_STATUS], counts_from(counters, 1))
return 1
