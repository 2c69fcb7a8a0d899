-- poll_claim: takes up to N due tasks from a poll schedule. Each claimed task is pushed back by a lease (one ZADD
-- for all of them), so no other poller takes it while this one polls, and a poller that dies only delays the task
-- by the lease. The caller reads the claimed tasks' hashes itself, outside the script (a plain HMGET costs Redis
-- about half what the same read and its reply cost through Lua).
-- KEYS[1] poll schedule (zset: task id scored by due time in ms)
-- ARGV[1] now (ms), ARGV[2] lease (ms), ARGV[3] max tasks
-- Returns {claimed task ids, next due}: next due is the earliest score left in the schedule after the claim (ms,
-- '' when empty), so a poller knows when to come back.
local function next_due()
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return first[2] or ''
end

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
if #due == 0 then
  return { {}, next_due() }
end
local until_ms = int(tonumber(ARGV[1]) + tonumber(ARGV[2]))
local leases = {}
for _, id in ipairs(due) do
  leases[#leases + 1] = until_ms
  leases[#leases + 1] = id
end
redis.call('ZADD', KEYS[1], unpack(leases))
return { due, next_due() }
