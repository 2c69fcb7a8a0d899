-- grant: adds credits to a tenant.
-- KEYS[1] tenant hash, KEYS[2] tenant ledger stream
-- ARGV[1] amount (> 0), ARGV[2] reason, ARGV[3] now (ms)
-- Returns the new balance, or -1 when the tenant does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local balance = redis.call('HINCRBY', KEYS[1], TENANT_BALANCE, tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[1], TENANT_GRANTED, tonumber(ARGV[1]))
redis.call('XADD', KEYS[2], '*', 'kind', 'grant', 'amount', ARGV[1], 'reason', ARGV[2], 'balance', balance, 'at', ARGV[3])
return balance
