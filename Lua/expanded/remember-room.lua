#!lua
--[[
  After join.lua added a peer to a room: records the room on the peer, so that the disconnect
  clean-up knows to take it out again, and introduces the peer to every member it found there
  (join.lua's snapshot), as one message on the peer's channel and in its log. Runs on the
  peer's keys (join.lua runs on the room's), and only while the peer still has a session: if
  it ended while the join was in flight, this returns NO_SESSION and the node undoes the join
  with leave.lua. Either this runs before disconnect.lua (which then sees the room) or after
  it (and refuses), so no peer is left in a room without a stream.

  The introductions are sent only when the room enters the peer's rooms hash: a join that is
  repeated (its first reply was lost) records nothing and sends nothing twice.

    KEYS[1] peer hash            sb:peer:{P}
    KEYS[2] peer rooms hash      sb:peer:{P}:rooms    field room id -> its join's entry id
    KEYS[3] peer event log       sb:peer:{P}:log      stream, field m

    ARGV[1] room id
    ARGV[2] maximum rooms per peer (0: no limit)
    ARGV[3] peer channel         sb:peer:{P}:events   (sharded pub/sub)
    ARGV[4] the room log's entry id the snapshot is as of (join.lua's reply)
    ARGV[5] log length kept      (entries, approximate)
    ARGV[6] log retention        (milliseconds since the last write)
    ARGV[7] the members' user JSON at that entry, one per line (join.lua's reply; "" for none)

  Log entry "joined\n<room id>\n<entry id>\n<user JSON>\n<user JSON>..." (one line per
  member, none for an empty room), published as "<peer log entry id>\n" .. entry.
  Returns 1 if recorded and sent, 0 if the room was recorded already, NO_SESSION if the peer
  has no session, TOO_MANY_ROOMS if it is in the maximum number of rooms already (for those
  two the caller must undo the join; codes in include/codes.lua).
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
local room, channel, position = ARGV[1], ARGV[3], ARGV[4]

if redis.call("EXISTS", peer) == 0 then
  return NO_SESSION
end
if redis.call("HEXISTS", rooms, room) == 1 then
  return 0
end
local maxRooms = tonumber(ARGV[2]) or 0
if maxRooms > 0 and redis.call("HLEN", rooms) >= maxRooms then
  return TOO_MANY_ROOMS
end
redis.call("HSET", rooms, room, position)
local message = "joined\n" .. room .. "\n" .. position
if ARGV[7] ~= "" then message = message .. "\n" .. ARGV[7] end
appendAndPublish(log, channel, message, ARGV[5], ARGV[6])
return 1
