-- expire_batches: removes settled batches whose retention is over: each batch's hash, its tasks and its event
-- stream (one UNLINK per batch), and its entry in the partition's expiry index. Run after expire_tenant.lua has
-- cleaned the batches' tenant side (another slot), so a crash in between leaves the batch indexed and the next
-- run does both steps again; both are idempotent.
-- KEYS[1] the partition's settled batches (zset by settlement ms), then for each batch in ARGV order: its hash, its
-- event stream and its task hashes (the counts are in ARGV)
-- ARGV[1] cutoff (ms): only batches settled at or before it go; then for each batch: its id and how many of the
-- keys after KEYS[1] are its own (2 + its task count)
-- Returns how many batches were removed.
local cutoff = tonumber(ARGV[1])
local removed = 0
local next_key = 2
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local count = tonumber(ARGV[i + 1])
  local own = {}
  for k = next_key, next_key + count - 1 do
    own[#own + 1] = KEYS[k]
  end
  next_key = next_key + count
  local settled_at = tonumber(redis.call('ZSCORE', KEYS[1], id))
  if settled_at and settled_at <= cutoff then
    -- Only a final batch is ever indexed here (settle_finalize.lua); check it all the same.
    local status = redis.call('HGET', own[1], BATCH_STATUS)
    if status == false or status == 'completed' or status == 'cancelled' then
      -- One UNLINK per batch; a very large batch in slices, within what Lua's unpack takes.
      for first = 1, #own, 1000 do
        redis.call('UNLINK', unpack(own, first, math.min(first + 999, #own)))
      end
      removed = removed + 1
    end
    redis.call('ZREM', KEYS[1], id)
  end
end
return removed
