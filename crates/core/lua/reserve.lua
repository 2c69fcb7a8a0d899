-- reserve: freezes a batch's whole cost on its tenant (balance -> frozen), once per batch id, and lists the batch
-- under the tenant.
-- KEYS[1] tenant hash, KEYS[2] reservations hash (batch id -> amount), KEYS[3] ledger stream, KEYS[4] tenant's
-- batch index (zset scored by creation ms), KEYS[5] settlements hash, KEYS[6] ledger ids by batch (hash)
-- ARGV[1] batch id, ARGV[2] amount, ARGV[3] now (ms)
-- Returns {1, balance} when reserved (or already reserved), {0, balance} when the balance is short, {-1, balance}
-- when this batch id was settled or released before (it cannot be reserved again).
if redis.call('HEXISTS', KEYS[5], ARGV[1]) == 1 then
  return { -1, tonumber(redis.call('HGET', KEYS[1], TENANT_BALANCE)) }
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return { 1, tonumber(redis.call('HGET', KEYS[1], TENANT_BALANCE)) }
end
local amount = tonumber(ARGV[2])
local money = redis.call('HMGET', KEYS[1], TENANT_BALANCE, TENANT_FROZEN)
local balance, frozen = tonumber(money[1] or '0'), tonumber(money[2] or '0')
if not balance or not frozen then
  return redis.error_reply('the tenant hash holds credits that are not numbers')
end
if balance < amount then
  return { 0, balance }
end
balance = balance - amount
redis.call('HSET', KEYS[1], TENANT_BALANCE, balance, TENANT_FROZEN, frozen + amount)
redis.call('HSET', KEYS[2], ARGV[1], amount)
local entry = redis.call('XADD', KEYS[3], '*', 'kind', 'freeze', 'amount', amount, 'batch_id', ARGV[1], 'balance', balance, 'at', ARGV[3])
redis.call('HSET', KEYS[6], ARGV[1], entry)
redis.call('ZADD', KEYS[4], tonumber(ARGV[3]), ARGV[1])
return { 1, balance }
