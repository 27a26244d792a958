#!lua
--[[
  Reads one event log from a position on: what a resuming stream missed (its own log and the
  log of each room it is in), and what a stream that just joined a room must catch up on
  from the join's position.

    KEYS[1] event log            sb:peer:{P}:log or sb:room:{R}:log   stream, field m

    ARGV[1] where to start: "<entry id>" to include that entry, "(<entry id>" to start
            after it

  Returns a flat array {entry id, message, entry id, message, ...} in log order (empty if the
  log has expired: nothing was written for longer than its retention), or LOG_TRIMMED when
  the log no longer holds every entry from there: then the reader cannot be given exactly
  what it missed (codes in include/codes.lua).
]]
-- The return codes every script uses, one meaning each (mirrored by `ScriptCode` in
-- Sources/Coordinator/ScriptCalls.swift). A script that changed nothing says why with one.
local NO_SESSION = -1      -- the peer has no session: it never connected, or it is gone
local NOT_MEMBER = -2      -- the peer is not in the room
local ALREADY_MEMBER = -3  -- the peer is in the room already
local ROOM_FULL = -4       -- the room holds its maximum of members
local TOO_MANY_ROOMS = -5  -- the peer is in its maximum of rooms
local NO_SHARED_ROOM = -6  -- the target shares no room with the sender
local LOG_TRIMMED = -7     -- the log no longer holds everything after the position asked for
-- Shared by every script that writes an event log (a Redis stream, one message per entry in
-- field "m"), and by read-log.lua.

-- Appends `message` to `log`, keeps the log `retention` milliseconds past this write (and
-- about `maxLength` entries), and SPUBLISHes "<entry id>\n<message>" on `channel`, in the
-- slot of the log's key. Returns the entry id and the number of nodes that received it.
local function appendAndPublish(log, channel, message, maxLength, retention)
  local id = redis.call("XADD", log, "MAXLEN", "~", maxLength, "*", "m", message)
  redis.call("PEXPIRE", log, retention)
  return id, redis.call("SPUBLISH", channel, id .. "\n" .. message)
end

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

-- A room's members as they were right after entry `id` (a table peer id -> user JSON, changed
-- in place from the members now), by undoing, newest first, the joins and leaves logged after
-- it. With `stopAtLeaveOf`, walks back only to that peer's latest leave, and takes its id as
-- `id`. Returns the id, or nil if the log no longer holds what it takes.
local function membersAsOf(log, members, id, stopAtLeaveOf)
  if id and not completeAfter(log, id) then return nil end
  local upper = "+"
  while true do
    local batch = redis.call("XREVRANGE", log, upper, id and ("(" .. id) or "-", "COUNT", 100)
    for _, entry in ipairs(batch) do
      local kind, peer, user = string.match(entry[2][2], "^(%a+)\n([^\n]*)\n(.*)$")
      if stopAtLeaveOf and kind == "leave" and peer == stopAtLeaveOf then return entry[1] end
      if kind == "join" then members[peer] = nil elseif kind == "leave" then members[peer] = user end
    end
    if #batch < 100 then return (not stopAtLeaveOf) and id or nil end
    upper = "(" .. batch[#batch][1]
  end
end

-- The values of a table peer id -> user JSON, one per line (the snapshots scripts return).
local function lines(members, except)
  local values = {}
  for peer, user in pairs(members) do
    if peer ~= except then values[#values + 1] = user end
  end
  return table.concat(values, "\n")
end

-- A hash's fields and values as a table.
local function hashTable(key)
  local flat, result = redis.call("HGETALL", key), {}
  for i = 1, #flat, 2 do result[flat[i]] = flat[i + 1] end
  return result
end

local log, from = KEYS[1], ARGV[1]
local exclusive = string.sub(from, 1, 1) == "("
local start = exclusive and string.sub(from, 2) or from

if not string.match(start, "^%d+-%d+$") then return redis.error_reply("ERR invalid log position " .. from) end
if not completeAfter(log, start) then return LOG_TRIMMED end

local messages = {}
for _, entry in ipairs(redis.call("XRANGE", log, from, "+")) do
  messages[#messages + 1] = entry[1]
  messages[#messages + 1] = entry[2][2]
end
return messages
