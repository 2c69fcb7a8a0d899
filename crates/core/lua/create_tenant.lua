-- create_tenant: writes a new tenant's own state in one step: its hash, its initial credits (a grant ledger entry)
-- and the record of its first API key. The key's global lookup entry and the tenant index are written after this,
-- by the caller (other slots), so the key only works once the tenant is whole.
-- KEYS[1] tenant hash, KEYS[2] tenant ledger stream, KEYS[3] API key records (hash)
-- ARGV[1] tenant id, ARGV[2] name, ARGV[3] now (ms), ARGV[4] initial credits (decimal string, may be 0),
-- ARGV[5] key id, ARGV[6] key record (JSON)
-- Returns 1, or 0 when the tenant already exists (nothing changed).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], TENANT_ID, ARGV[1], TENANT_NAME, ARGV[2], TENANT_BALANCE, ARGV[4], TENANT_FROZEN, 0,
  TENANT_CHARGED, 0, TENANT_GRANTED, ARGV[4], TENANT_CREATED_AT, ARGV[3])
if ARGV[4] ~= '0' then
  redis.call('XADD', KEYS[2], '*', 'kind', 'grant', 'amount', ARGV[4], 'reason', 'initial credits', 'balance', ARGV[4],
    'at', ARGV[3])
end
redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
return 1
