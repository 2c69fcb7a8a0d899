-- idem_begin: starts a request carrying an Idempotency-Key, or says what to answer instead.
-- KEYS[1] the key's record (hash: fingerprint, state pending|done, lease_until, owner, resource, status, body,
-- headers)
-- ARGV[1] request fingerprint, ARGV[2] now (ms), ARGV[3] lease (ms), ARGV[4] record ttl (ms), ARGV[5] owner token
-- of this attempt, ARGV[6] resource id for a first attempt to create under (a batch id; may be empty)
-- Returns {'new', resource} when this attempt runs the request first; {'takeover', resource} when it takes over
-- from an attempt whose lease ran out (resource = the id that attempt chose); {'replay', status, body, headers}
-- with the stored answer; {'mismatch'} when the key was used for a different request; {'in_progress'} while
-- another attempt holds the lease.
local r = redis.call('HMGET', KEYS[1], 'fingerprint', 'state', 'lease_until', 'resource', 'status', 'body', 'headers')
local now = tonumber(ARGV[2])
if not r[1] then
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'state', 'pending', 'lease_until', now + tonumber(ARGV[3]),
    'owner', ARGV[5], 'resource', ARGV[6])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return { 'new', ARGV[6] }
end
if r[1] ~= ARGV[1] then
  return { 'mismatch' }
end
if r[2] == 'done' then
  return { 'replay', r[5], r[6], r[7] }
end
if (tonumber(r[3]) or 0) > now then
  return { 'in_progress' }
end
redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[3]), 'owner', ARGV[5])
return { 'takeover', r[4] or '' }
