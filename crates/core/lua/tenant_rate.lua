-- tenant_rate: one request of a tenant against its rate limit, shared by every gateway: GCRA, `rate` requests a
-- second on average with bursts of up to `burst`.
-- It also records when the API key that made the request was last used.
-- KEYS[1] theoretical arrival time (string, ms), KEYS[2] last use of each key (hash: key id -> ms)
-- ARGV[1] now (ms), ARGV[2] rate per second (> 0), ARGV[3] burst (>= 1), ARGV[4] the key's id
-- Returns {1, 0, remaining} when the request may go ahead (remaining: how many more could go right now), or
-- {0, wait_ms, 0} when it must wait that long.
redis.call('HSET', KEYS[2], ARGV[4], ARGV[1])
local now = tonumber(ARGV[1])
local interval = 1000 / tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local wait, tat = gcra_admit(KEYS[1], now, interval, burst)
if wait > 0 then
  return { 0, wait, 0 }
end
return { 1, 0, math.max(0, math.floor((now + interval * (burst - 1) - tat) / interval) + 1) }
