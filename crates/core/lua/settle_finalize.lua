-- settle_finalize: records a finished settlement on the batch (settling -> completed, cancelling -> cancelled), and
-- hands the batch from the sweeper's open index to retention's expiry index (one ZADD per batch: nothing per task).
-- KEYS[1] batch hash, KEYS[2] batch events stream, KEYS[3] the partition's open batches (zset),
-- KEYS[4] the partition's settled batches (zset by settlement ms; see expire_batches.lua)
-- ARGV[1] now (ms), ARGV[2] charged, ARGV[3] refunded
-- Returns 1 when applied, 0 when the batch was not waiting for its settlement (a duplicate message).
local status = redis.call('HGET', KEYS[1], BATCH_STATUS)
local final
if status == 'settling' then
  final = 'completed'
elseif status == 'cancelling' then
  final = 'cancelled'
else
  return 0
end
redis.call('HSET', KEYS[1], BATCH_STATUS, final, BATCH_CHARGED, ARGV[2], BATCH_REFUNDED, ARGV[3],
  BATCH_COMPLETED_AT, ARGV[1])
local id = redis.call('HGET', KEYS[1], BATCH_ID)
redis.call('ZREM', KEYS[3], id)
redis.call('ZADD', KEYS[4], tonumber(ARGV[1]), id)
emit_batch(KEYS[2], KEYS[1])
return 1
