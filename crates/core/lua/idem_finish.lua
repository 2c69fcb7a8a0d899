-- idem_finish: stores the answer of a request carrying an Idempotency-Key, for its retries to replay.
-- KEYS[1] the key's record (see idem_begin.lua)
-- ARGV[1] owner token of the attempt, ARGV[2] HTTP status, ARGV[3] body, ARGV[4] headers (JSON array of
-- [name, value] pairs), ARGV[5] record ttl (ms)
-- Returns 1 when stored, 0 when the attempt no longer holds the record (taken over after its lease ran out, or
-- expired): the holder stores its own answer.
local r = redis.call('HMGET', KEYS[1], 'state', 'owner')
if r[1] ~= 'pending' or r[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3], 'headers', ARGV[4])
redis.call('HDEL', KEYS[1], 'lease_until', 'owner')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
