-- Reading an event log's history: shared by read-log.lua, and by join.lua and leave.lua
-- (through snapshots.lua).

-- The id of the newest entry in `log`, or "0-0" if it has none (it expired).
local function latestEntry(log)
  local newest = redis.call("XREVRANGE", log, "+", "-", "COUNT", 1)
  return newest[1] and newest[1][1] or "0-0"
end

-- Whether entry id `a` comes after `b` (ids compare as milliseconds, then sequence).
local function entryAfter(a, b)
  local ams, aseq = string.match(a, "^(%d+)-(%d+)$")
  local bms, bseq = string.match(b, "^(%d+)-(%d+)$")
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams > bms or (ams == bms and aseq > bseq)
end

-- Whether `log` still holds every entry after `id`: Redis trims the oldest entries first, so
-- none is missing unless some were trimmed and the oldest kept is later than `id` (Redis 7.0
-- does not record which was the newest trimmed, so an `id` just before the oldest kept counts
-- as trimmed too).
local function completeAfter(log, id)
  local oldest = redis.call("XRANGE", log, "-", "+", "COUNT", 1)[1]
  if not oldest or not entryAfter(oldest[1], id) then return true end
  local info, length, added = redis.call("XINFO", "STREAM", log), 0, 0
  for i = 1, #info, 2 do
    if info[i] == "length" then length = info[i + 1] elseif info[i] == "entries-added" then added = info[i + 1] end
  end
  return added <= length
end
