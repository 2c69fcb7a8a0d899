-- expire_tenant: the tenant's side of removing settled batches whose retention is over: their entries in the
-- tenant's batch list, settlement records and ledger index. The ledger stream itself stays (the money's
-- history). Idempotent: a batch already gone from all three changes nothing.
-- Dropping a settlement record re-opens its batch id to reserve.lua, which is safe only because nothing can ask to
-- reserve that id any more: batch ids are made by the gateway, and the only retry that reuses one is an
-- Idempotency-Key takeover, whose record expires `gateway.idempotency_ttl_secs` after the batch id was made,
-- while this runs `retention.completed_secs` (at least as long, checked at start-up) after the batch settled.
-- KEYS[1] tenant's batch index (zset), KEYS[2] settlements hash, KEYS[3] ledger ids by batch (hash)
-- ARGV batch ids
-- Returns how many batches were still listed.
local listed = redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
redis.call('HDEL', KEYS[3], unpack(ARGV))
return listed
