-- retry_pump: turns due retries of one partition back into submit messages.
-- KEYS[1] retry schedule (zset), KEYS[2] submit stream
-- ARGV[1] now (ms), ARGV[2] most entries to move, ARGV[3] the partition's task key prefix (the task id is appended)
-- Returns how many were moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, task_id in ipairs(due) do
  redis.call('ZREM', KEYS[1], task_id)
  local suffix = string.match(task_id, '^tsk_(.+)_%d+$')
  local traceparent = redis.call('HGET', ARGV[3] .. task_id, 'traceparent')
  xadd_message(KEYS[2], { 'v', '1', 'type', 'submit_task', 'task_id', task_id, 'batch_id', 'bat_' .. suffix }, traceparent)
end
return #due
