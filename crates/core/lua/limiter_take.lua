-- limiter_take: one process's pool of a provider's shared limits asks for permits in a block: in-flight slots
-- (lease-based, so a dead holder's slots come back when its lease ends) and rate tokens (GCRA, rate per second
-- with a burst, scaled by the AIMD factor that 429s lower). It also reports what its calls met since it last
-- asked: any 429 halves the factor (down to a floor), each good answer raises it by a small step (additive
-- increase, multiplicative decrease).
-- KEYS[1] theoretical arrival time (string, ms), KEYS[2] slot holders (hash: holder -> "slots:lease expiry ms"),
-- KEYS[3] AIMD factor (string, 0 < f <= 1; missing = 1)
-- ARGV[1] now (ms), ARGV[2] rate per second, ARGV[3] burst, ARGV[4] max in flight, ARGV[5] share of the slots
-- this kind of call may use (0 < s <= 1), ARGV[6] lease (ms), ARGV[7] holder id, ARGV[8] slots the holder wants
-- to hold (those in use included; 0 gives all back), ARGV[9] rate tokens wanted, ARGV[10] 429s since the last
-- ask, ARGV[11] good answers since the last ask, ARGV[12] factor floor, ARGV[13] factor step
-- Returns {slots now held, tokens granted, ms to wait before asking again (0 unless no token was granted),
-- factor as a string}.
local now = tonumber(ARGV[1])
local holder = ARGV[7]

-- AIMD first, so the tokens below are granted at the rate now in force.
local factor = tonumber(redis.call('GET', KEYS[3]) or '1')
local before = factor
if tonumber(ARGV[10]) > 0 then
  factor = math.max(tonumber(ARGV[12]), factor / 2)
elseif factor < 1 then
  factor = math.min(1, factor + tonumber(ARGV[13]) * tonumber(ARGV[11]))
end
if factor ~= before then
  if factor >= 1 then
    redis.call('DEL', KEYS[3])
  else
    redis.call('SET', KEYS[3], tostring(factor))
  end
end

-- Slots: what the other live holders hold is not ours to take; expired holders are dropped.
local others = 0
local holders = redis.call('HGETALL', KEYS[2])
for i = 1, #holders, 2 do
  local slots, expiry = string.match(holders[i + 1], '^(%d+):(%d+)$')
  if not expiry or tonumber(expiry) < now then
    redis.call('HDEL', KEYS[2], holders[i])
  elseif holders[i] ~= holder then
    others = others + tonumber(slots)
  end
end
local allowed = math.max(1, math.floor(tonumber(ARGV[4]) * tonumber(ARGV[5])))
local held = math.max(0, math.min(tonumber(ARGV[8]), allowed - others))
if held > 0 then
  redis.call('HSET', KEYS[2], holder, held .. ':' .. (now + tonumber(ARGV[6])))
else
  redis.call('HDEL', KEYS[2], holder)
end

-- Tokens: as many of those wanted as the GCRA admits now; 2% under the configured rate, since calls leave here
-- but arrive at the provider a few ms apart from when they were granted, and the provider counts arrivals.
local wanted = tonumber(ARGV[9])
if wanted <= 0 or held == 0 then
  return { held, 0, held == 0 and 20 or 0, tostring(factor) }
end
local interval = 1020 / (tonumber(ARGV[2]) * factor)
local burst = tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local admitted = math.min(wanted, math.floor((now - tat) / interval) + burst)
if admitted <= 0 then
  return { held, 0, math.max(1, math.ceil(tat - interval * (burst - 1) - now)), tostring(factor) }
end
local new_tat = tat + admitted * interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now + 1000))
return { held, admitted, 0, tostring(factor) }
