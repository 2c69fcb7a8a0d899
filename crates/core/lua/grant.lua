-- grant: adds credits to a tenant.
-- KEYS[1] tenant hash, KEYS[2] tenant ledger stream
-- ARGV[1] amount (> 0), ARGV[2] reason, ARGV[3] now (ms), ARGV[4] the most credits a tenant may ever be granted
-- Returns the new balance, -1 when the tenant does not exist, or -2 when the grant would pass ARGV[4] (nothing
-- changes). The amount goes to HINCRBY as the decimal string it came as: a Lua number would print large values in
-- exponent form, which Redis refuses.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local granted = tonumber(redis.call('HGET', KEYS[1], TENANT_GRANTED)) or 0
if granted + tonumber(ARGV[1]) > tonumber(ARGV[4]) then
  return -2
end
local balance = redis.call('HINCRBY', KEYS[1], TENANT_BALANCE, ARGV[1])
redis.call('HINCRBY', KEYS[1], TENANT_GRANTED, ARGV[1])
redis.call('XADD', KEYS[2], '*', 'kind', 'grant', 'amount', ARGV[1], 'reason', ARGV[2], 'balance', balance, 'at', ARGV[3])
return balance
