-- retry_pump: turns due retries of one partition back into submit messages. The batch id and trace context of
-- each message come from the task hash; a retry whose task hash is gone is dropped (there is nothing to submit).
-- KEYS[1] retry schedule (zset), KEYS[2] submit stream
-- ARGV[1] now (ms), ARGV[2] most entries to move, ARGV[3] the partition's task key prefix (the task id is appended)
-- Returns how many submit messages were written.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local sent = 0
for _, task_id in ipairs(due) do
  redis.call('ZREM', KEYS[1], task_id)
  local t = redis.call('HMGET', ARGV[3] .. task_id, TASK_BATCH_ID, TASK_TRACEPARENT)
  if t[1] then
    xadd_message(KEYS[2], submit_task_message(task_id, t[1]), t[2])
    sent = sent + 1
  end
end
return sent
