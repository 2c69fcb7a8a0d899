-- create_batch: writes a batch and its tasks and queues the tasks that may start now.
-- KEYS[1] batch hash, KEYS[2] submit stream of the batch's partition, KEYS[3] batch events stream
-- ARGV[1] batch fields (JSON object of strings), ARGV[2] tasks (JSON array of objects of strings, each with `id`),
-- ARGV[3] task key prefix (the task id is appended)
-- Returns 1 when created, 0 when the batch already existed (idempotent replay).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local batch = cjson.decode(ARGV[1])
local tasks = cjson.decode(ARGV[2])
for field, value in pairs(batch) do
  redis.call('HSET', KEYS[1], field, value)
end
for i, task in ipairs(tasks) do
  local key = ARGV[3] .. task.id
  for field, value in pairs(task) do
    redis.call('HSET', key, field, value)
  end
  -- chain mode starts with the first shot only; the next one is queued when its predecessor succeeds
  if batch.mode ~= 'chain' or i == 1 then
    redis.call('XADD', KEYS[2], '*', 'v', '1', 'type', 'submit_task', 'task_id', task.id, 'batch_id', batch.id)
  end
end
emit_batch(KEYS[3], KEYS[1])
return 1
