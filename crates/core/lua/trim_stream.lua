-- trim_stream: drops the entries of a stream that every consumer group has acknowledged. The stream is trimmed
-- (XTRIM MINID) up to the oldest entry any group still needs: its oldest pending (delivered, unacknowledged)
-- entry, or, with nothing pending, the first id after its last delivered entry (that one is acknowledged too;
-- everything after it is undelivered). A stream that every group has read to its end is emptied, which lets
-- Redis free its last node. A stream without a group is left alone: nobody has read it yet.
-- KEYS[1] the stream
-- Returns how many entries were dropped.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local a_ms, a_seq = parse(a)
  local b_ms, b_seq = parse(b)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end
local floor
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do
    info[group[i]] = group[i + 1]
  end
  local keep = info['last-delivered-id']
  if tonumber(info['pending']) == 0 then
    local ms, seq = parse(keep)
    keep = string.format('%d-%d', ms, seq + 1)
  else
    local oldest = redis.call('XPENDING', KEYS[1], info['name'])[2]
    if oldest and before(oldest, keep) then
      keep = oldest
    end
  end
  if floor == nil or before(keep, floor) then
    floor = keep
  end
end
if floor == nil or floor == '0-0' then
  return 0
end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
