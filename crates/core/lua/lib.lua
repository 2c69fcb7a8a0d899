-- Shared helpers, prepended to every Gantry script at load time, after the prelude generated from Rust
-- (`submit_task_message`, `settle_batch_message`, `TRACEPARENT_FIELD`, and the hash field names `BATCH`, `TASK`
-- and `TENANT`; see store/scripts.rs).

-- Appends an event (`data`, a JSON text) for the live progress stream of one batch (SSE), capped to the newest
-- entries.
local function emit(events_key, event_type, data)
  redis.call('XADD', events_key, 'MAXLEN', '~', '2000', '*', 'type', event_type, 'data', data)
end

-- A whole number as JSON: a number made in Lua is printed as an integer (never through Lua's float format), a
-- decimal string read from a hash goes as it is, and a missing one is 0.
local function int(value)
  if type(value) == 'number' then
    return string.format('%d', value)
  end
  if not value or value == '' then
    return '0'
  end
  return value
end

-- The batch counters, in the order `counts_from` reads them.
local function counter_fields()
  return BATCH_TOTAL, BATCH_N_QUEUED, BATCH_N_RUNNING, BATCH_N_SUCCEEDED, BATCH_N_FAILED, BATCH_N_CANCELLED
end

-- The counters of a batch from an HMGET reply that has `counter_fields()` from position `at` on.
local function counts_from(values, at)
  return {
    total = tonumber(values[at]) or 0, queued = tonumber(values[at + 1]) or 0,
    running = tonumber(values[at + 2]) or 0, succeeded = tonumber(values[at + 3]) or 0,
    failed = tonumber(values[at + 4]) or 0, cancelled = tonumber(values[at + 5]) or 0,
  }
end

-- The arguments of one HSET that writes counts back (the total never changes).
local function counter_values(c)
  return BATCH_N_QUEUED, int(c.queued), BATCH_N_RUNNING, int(c.running), BATCH_N_SUCCEEDED, int(c.succeeded),
    BATCH_N_FAILED, int(c.failed), BATCH_N_CANCELLED, int(c.cancelled)
end

-- `request_counts` as JSON. The events are written as text (ids and statuses are plain ASCII of our own making,
-- so they need no escaping): cheaper than a table for cjson, and no number goes through a float format.
local function counts_json(c)
  return '{"total":' .. int(c.total) .. ',"queued":' .. int(c.queued) .. ',"running":' .. int(c.running)
    .. ',"succeeded":' .. int(c.succeeded) .. ',"failed":' .. int(c.failed) .. ',"cancelled":' .. int(c.cancelled)
    .. '}'
end

-- A batch's progress event from values the script already holds (no read).
local function emit_batch_counts(events_key, id, status, counts)
  emit(events_key, 'batch.updated',
    '{"id":"' .. id .. '","status":"' .. status .. '","request_counts":' .. counts_json(counts) .. '}')
end

-- A batch's progress event, read from its hash (for scripts that hold none of it).
local function emit_batch(events_key, batch_key)
  local b = redis.call('HMGET', batch_key, BATCH_ID, BATCH_STATUS, counter_fields())
  emit_batch_counts(events_key, b[1], b[2], counts_from(b, 3))
end

-- A task's progress event from values the script already holds (no read); `counts`, when given, are its batch's
-- counts after the change (a task's end carries them, so no batch event is needed unless the batch's status moves).
local function emit_task_values(events_key, id, index, status, progress, attempts, counts)
  local data = '{"id":"' .. id .. '","index":' .. int(index) .. ',"status":"' .. status .. '","progress":'
    .. int(progress) .. ',"attempts":' .. int(attempts)
  if counts then
    data = data .. ',"request_counts":' .. counts_json(counts)
  end
  emit(events_key, 'task.updated', data .. '}')
end

-- A task's progress event, read from its hash.
local function emit_task(events_key, task_key)
  local t = redis.call('HMGET', task_key, TASK_ID, TASK_INDEX, TASK_STATUS, TASK_PROGRESS, TASK_ATTEMPTS)
  emit_task_values(events_key, t[1], t[2], t[3], t[4], t[5])
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
