-- limiter_release: gives a permit back and adjusts the shared rate: a 429 halves it (down to a floor), every
-- other answer raises it by a small step (additive increase, multiplicative decrease).
-- KEYS[1] in-flight permits (zset), KEYS[2] AIMD factor (string)
-- ARGV[1] holder id, ARGV[2] outcome: 'ok' | 'rate_limited' | 'error', ARGV[3] floor of the factor,
-- ARGV[4] additive step
-- Returns the factor now in force, as a string.
redis.call('ZREM', KEYS[1], ARGV[1])
local factor = tonumber(redis.call('GET', KEYS[2]) or '1')
if ARGV[2] == 'rate_limited' then
  factor = math.max(tonumber(ARGV[3]), factor / 2)
elseif ARGV[2] == 'ok' and factor < 1 then
  factor = math.min(1, factor + tonumber(ARGV[4]))
else
  return tostring(factor)
end
if factor >= 1 then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], tostring(factor))
end
return tostring(factor)
