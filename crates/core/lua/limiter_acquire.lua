-- limiter_acquire: asks one provider's shared limits for a request slot: a GCRA rate limit (rate per second with
-- a burst, scaled by the AIMD factor that 429s lower) and a lease-based in-flight semaphore whose permits expire
-- if their holder dies.
-- KEYS[1] theoretical arrival time (string, ms), KEYS[2] in-flight permits (zset: holder -> lease expiry ms),
-- KEYS[3] AIMD factor (string, 0 < f <= 1; missing = 1)
-- ARGV[1] now (ms), ARGV[2] rate per second, ARGV[3] burst, ARGV[4] max in flight, ARGV[5] share of the permits
-- this kind of call may use (0 < s <= 1), ARGV[6] lease (ms), ARGV[7] holder id
-- Returns 0 when the slot is granted (the permit is held until released or its lease ends), else the number of
-- milliseconds to wait before asking again.
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local allowed = math.max(1, math.floor(tonumber(ARGV[4]) * tonumber(ARGV[5])))
if redis.call('ZCARD', KEYS[2]) >= allowed then
  return 20
end
local factor = tonumber(redis.call('GET', KEYS[3]) or '1')
-- 2% under the configured rate: requests leave here but arrive at the provider a few ms apart from when they
-- were granted, and the provider counts arrivals.
local wait = gcra_admit(KEYS[1], now, 1020 / (tonumber(ARGV[2]) * factor), tonumber(ARGV[3]))
if wait > 0 then
  return wait
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[7])
return 0
