-- claim_submit: a submitter takes a queued task (queued -> submitting) and starts a new attempt. A task left in
-- `submitting` by a submitter that died (its lease ran out) is taken over the same way, with a new attempt.
-- KEYS[1] task hash, KEYS[2] batch hash, KEYS[3] batch events stream
-- ARGV[1] now (ms), ARGV[2] lease (ms)
-- Returns {'ok', attempt, model, spec, chain_first_frame, tenant_id} or {'skip', current status} (or {'skip', 'missing'}).
local status = redis.call('HGET', KEYS[1], TASK_STATUS)
if not status then
  return { 'skip', 'missing' }
end
local now = tonumber(ARGV[1])
local expired = status == 'submitting' and tonumber(redis.call('HGET', KEYS[1], TASK_LEASE_UNTIL) or '0') < now
if status ~= 'queued' and not expired then
  return { 'skip', status }
end
if redis.call('HGET', KEYS[2], BATCH_STATUS) == 'cancelling' then
  return { 'skip', 'cancelling' }
end
local attempt = redis.call('HINCRBY', KEYS[1], TASK_ATTEMPTS, 1)
redis.call('HSET', KEYS[1], TASK_STATUS, 'submitting', TASK_LEASE_UNTIL, now + tonumber(ARGV[2]),
  TASK_UPDATED_AT, now, TASK_CLAIMED_AT, now)
if status == 'queued' then
  redis.call('HINCRBY', KEYS[2], BATCH_N_QUEUED, -1)
  redis.call('HINCRBY', KEYS[2], BATCH_N_RUNNING, 1)
end
emit_task(KEYS[3], KEYS[1])
if redis.call('HGET', KEYS[2], BATCH_STATUS) == 'queued' then
  redis.call('HSET', KEYS[2], BATCH_STATUS, 'in_progress')
  emit_batch(KEYS[3], KEYS[2])
end
local t = redis.call('HMGET', KEYS[1], TASK_MODEL, TASK_SPEC, TASK_CHAIN_FIRST_FRAME, TASK_TENANT_ID)
return { 'ok', attempt, t[1], t[2], t[3] or '', t[4] or '' }
