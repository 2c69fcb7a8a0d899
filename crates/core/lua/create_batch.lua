-- create_batch: writes a batch and its tasks and queues the tasks that may start now.
-- KEYS[1] batch hash, KEYS[2] submit stream of the batch's partition, KEYS[3] batch events stream,
-- KEYS[4] the partition's open batches (zset by creation ms; the sweeper walks it)
-- ARGV[1] task key prefix (the task id is appended), ARGV[2] batch id, ARGV[3] mode, ARGV[4] created at (ms),
-- ARGV[5] traceparent ('' = none), ARGV[6] number of tasks, ARGV[7] n = length of the batch's field/value list,
-- ARGV[8 .. 7+n] that list; then per task: its id, m = the length of its field/value list, and that list.
-- The hashes go in as flat lists straight from ARGV: no JSON to decode and no Lua table per hash.
-- Returns 1 when created, 0 when the batch already existed (idempotent replay).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local prefix, batch_id, mode, created_at, traceparent, total = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local n = tonumber(ARGV[7])
redis.call('HSET', KEYS[1], unpack(ARGV, 8, 7 + n))
local at, first = 8 + n, true
while at <= #ARGV do
  local task_id, m = ARGV[at], tonumber(ARGV[at + 1])
  redis.call('HSET', prefix .. task_id, unpack(ARGV, at + 2, at + 1 + m))
  -- chain mode starts with the first shot only; the next one is queued when its predecessor succeeds
  if first or mode ~= 'chain' then
    xadd_message(KEYS[2], submit_task_message(task_id, batch_id), traceparent)
  end
  first = false
  at = at + m + 2
end
redis.call('ZADD', KEYS[4], created_at, batch_id)
emit_batch_counts(KEYS[3], batch_id, 'queued',
  { total = total, queued = total, running = 0, succeeded = 0, failed = 0, cancelled = 0 })
return 1
