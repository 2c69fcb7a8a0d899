-- poll_claim: takes up to N due tasks from a poll schedule. Each claimed task is pushed back by a lease, so no
-- other poller takes it while this one polls, and a poller that dies only delays the task by the lease.
-- KEYS[1] poll schedule (zset: task id scored by due time in ms)
-- ARGV[1] now (ms), ARGV[2] lease (ms), ARGV[3] max tasks
-- Returns the claimed task ids.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], until_ms, id)
end
return due
