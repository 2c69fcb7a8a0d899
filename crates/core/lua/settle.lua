-- settle: turns a batch's reservation into a charge and a refund, exactly once per batch id.
-- KEYS[1] tenant hash, KEYS[2] reservations hash, KEYS[3] ledger stream, KEYS[4] settlements hash (batch id -> "charged:refunded"),
-- KEYS[5] ledger ids by batch (hash: batch id -> space-separated entry ids)
-- ARGV[1] batch id, ARGV[2] amount to charge, ARGV[3] now (ms)
-- Returns {1, charged, refunded} when settled now, {0, charged, refunded} when it had been settled before,
-- {-1} when there is no reservation for the batch.
local done = redis.call('HGET', KEYS[4], ARGV[1])
if done then
  local charged, refunded = string.match(done, '^(%d+):(%d+)$')
  return { 0, tonumber(charged), tonumber(refunded) }
end
local reserved = redis.call('HGET', KEYS[2], ARGV[1])
if not reserved then
  return { -1 }
end
reserved = tonumber(reserved)
local charge = tonumber(ARGV[2])
if charge > reserved then
  return redis.error_reply('charge exceeds the reservation')
end
local refund = reserved - charge
-- The three balances move together: one read, one write (the script is atomic, as HINCRBYs would be).
local money = redis.call('HMGET', KEYS[1], TENANT_FROZEN, TENANT_CHARGED, TENANT_BALANCE)
local frozen, spent, balance = tonumber(money[1] or '0'), tonumber(money[2] or '0'), tonumber(money[3] or '0')
if not frozen or not spent or not balance then
  return redis.error_reply('the tenant hash holds credits that are not numbers')
end
balance = balance + refund
redis.call('HSET', KEYS[1], TENANT_FROZEN, frozen - reserved, TENANT_CHARGED, spent + charge,
  TENANT_BALANCE, balance)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], charge .. ':' .. refund)
local charged = redis.call('XADD', KEYS[3], '*', 'kind', 'charge', 'amount', charge, 'batch_id', ARGV[1], 'balance', balance, 'at', ARGV[3])
local refunded = redis.call('XADD', KEYS[3], '*', 'kind', 'refund', 'amount', refund, 'batch_id', ARGV[1], 'balance', balance, 'at', ARGV[3])
local before = redis.call('HGET', KEYS[5], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[1], (before and (before .. ' ') or '') .. charged .. ' ' .. refunded)
return { 1, charge, refund }
