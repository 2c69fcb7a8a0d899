-- idem_release: gives up the lease of a request carrying an Idempotency-Key whose answer is not kept (a 5xx),
-- so that a retry runs it again at once. The record keeps its fingerprint and its resource id: the retry takes
-- over with the same batch id, so a reservation the failed attempt made is reused, never made twice.
-- KEYS[1] the key's record (see idem_begin.lua)
-- ARGV[1] owner token of the attempt
-- Returns 1 when released, 0 when the attempt no longer holds the record (taken over, answered or expired).
local r = redis.call('HMGET', KEYS[1], 'state', 'owner')
if r[1] ~= 'pending' or r[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'lease_until', 0, 'owner', '')
return 1
