-- cancel_batch: marks a batch `cancelling` (its tasks are then cancelled one by one with finish_task). A batch that
-- is already settling or final cannot be cancelled.
-- KEYS[1] batch hash, KEYS[2] batch events stream
-- Returns 'ok' when the batch is (now) cancelling, otherwise its status ('settling', 'completed', 'cancelled'),
-- or 'missing'.
local status = redis.call('HGET', KEYS[1], BATCH_STATUS)
if not status then
  return 'missing'
end
if status == 'queued' or status == 'in_progress' then
  redis.call('HSET', KEYS[1], BATCH_STATUS, 'cancelling')
  emit_batch(KEYS[2], KEYS[1])
  return 'ok'
end
if status == 'cancelling' then
  return 'ok'
end
return status
