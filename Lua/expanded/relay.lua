#!lua
--[[
  Routes a relayed message to the peer it is addressed to, if that peer has a session and
  shares a room with the sender (a stranger cannot message anyone by id).

  The message is written to the target's event log and published on the target's channel in
  one step. Only the node holding the peer's stream subscribes to that channel; if the peer
  is between streams (it dropped and may resume), the log keeps the message for read-log.lua.
  The sender's rooms are read by the node just before (they live in the sender's slot); the
  check against the target's rooms is atomic with the delivery.

    KEYS[1] target's peer hash   sb:peer:{P}
    KEYS[2] target's rooms hash  sb:peer:{P}:rooms    field room id -> its join's entry id
    KEYS[3] target's event log   sb:peer:{P}:log      stream, field m

    ARGV[1] target's channel     sb:peer:{P}:events   (sharded pub/sub)
    ARGV[2] event name
    ARGV[3] JSON data            {"peer":...,"data":...}
    ARGV[4] log length kept      (entries, approximate)
    ARGV[5] log retention        (milliseconds since the last write)
    ARGV[6..] the sender's room ids

  Log entry "relay\n<event>\n<JSON>", published as "<entry id>\n" .. entry.
  Returns NO_SESSION if the target has no session, NO_SHARED_ROOM if it shares no room with
  the sender (codes in include/codes.lua), else the number of nodes that received the message
  (0: no stream right now; kept in the log).
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

local peer, rooms, log = KEYS[1], KEYS[2], KEYS[3]
local channel, event, data = ARGV[1], ARGV[2], ARGV[3]

if redis.call("EXISTS", peer) == 0 then
  return NO_SESSION
end
for i = 6, #ARGV do
  if redis.call("HEXISTS", rooms, ARGV[i]) == 1 then
    local _, receivers = appendAndPublish(log, channel, "relay\n" .. event .. "\n" .. data, ARGV[4], ARGV[5])
    return receivers
  end
end
return NO_SHARED_ROOM
