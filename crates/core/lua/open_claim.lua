-- open_claim: takes the open batches of a partition that are due for a check by the sweeper, and pushes each one's
-- next check to ARGV[3] at once, so that concurrent sweeps do not check the same batch (the sweeper may bring a
-- check forward afterwards; see recovery.rs).
-- KEYS[1] the partition's open batches (zset by next check, ms)
-- ARGV[1] now (ms), ARGV[2] most batches to take, ARGV[3] their next check (ms)
-- Returns the ids taken, the longest overdue first.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[3]), id)
end
return due
