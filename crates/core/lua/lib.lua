-- Shared helpers, prepended to every Gantry script at load time, after the prelude generated from Rust
-- (`submit_task_message`, `settle_batch_message`, `TRACEPARENT_FIELD`, and the hash field names `BATCH`, `TASK`
-- and `TENANT`; see store/scripts.rs).

-- Appends an event for the live progress stream of one batch (SSE), capped to the newest entries.
local function emit(events_key, event_type, payload)
  redis.call('XADD', events_key, 'MAXLEN', '~', 2000, '*', 'type', event_type, 'data', cjson.encode(payload))
end

local function counts_of(batch_key)
  local c = redis.call('HMGET', batch_key, BATCH_TOTAL, BATCH_N_QUEUED, BATCH_N_RUNNING, BATCH_N_SUCCEEDED,
    BATCH_N_FAILED, BATCH_N_CANCELLED)
  return {
    total = tonumber(c[1]) or 0, queued = tonumber(c[2]) or 0, running = tonumber(c[3]) or 0,
    succeeded = tonumber(c[4]) or 0, failed = tonumber(c[5]) or 0, cancelled = tonumber(c[6]) or 0,
  }
end

local function emit_batch(events_key, batch_key)
  local b = redis.call('HMGET', batch_key, BATCH_ID, BATCH_STATUS)
  emit(events_key, 'batch.updated', { id = b[1], status = b[2], request_counts = counts_of(batch_key) })
end

local function emit_task(events_key, task_key)
  local t = redis.call('HMGET', task_key, TASK_ID, TASK_INDEX, TASK_STATUS, TASK_PROGRESS, TASK_ATTEMPTS)
  emit(events_key, 'task.updated', {
    id = t[1], index = tonumber(t[2]), status = t[3], progress = tonumber(t[4]) or 0, attempts = tonumber(t[5]) or 0,
  })
end

-- Appends a message (a flat list of fields from the prelude's `*_message` functions) to a stream, with the
-- trace context of its batch when there is one.
local function xadd_message(stream, fields, traceparent)
  if traceparent and traceparent ~= '' then
    fields[#fields + 1] = TRACEPARENT_FIELD
    fields[#fields + 1] = traceparent
  end
  redis.call('XADD', stream, '*', unpack(fields))
end

local function is_terminal(status)
  return status == 'succeeded' or status == 'failed' or status == 'cancelled'
end

-- GCRA: admits one request against the theoretical arrival time stored at `key` (string, ms), with `interval` ms
-- between requests on average and bursts of up to `burst`. Returns 0 and the new arrival time when admitted (the
-- key moves on), else the ms to wait and the unchanged arrival time.
local function gcra_admit(key, now, interval, burst)
  local tat = math.max(tonumber(redis.call('GET', key) or '0'), now)
  local allow_at = tat - interval * (burst - 1)
  if now < allow_at then
    return math.max(1, math.ceil(allow_at - now)), tat
  end
  local new_tat = tat + interval
  redis.call('SET', key, tostring(new_tat), 'PX', math.ceil(new_tat - now + 1000))
  return 0, new_tat
end
