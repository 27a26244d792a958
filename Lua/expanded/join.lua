#!lua
--[[
  Adds a peer to a room and introduces it to every member, in one atomic step, so two
  peers joining at once always learn of each other exactly once.

  Each existing member M is told "add-peer" about the joiner with offer=false, and the
  joiner is told "add-peer" about M with offer=true (the joiner makes the WebRTC offers).
  Joining a room one is already in changes nothing and publishes nothing.

  Every message is also written to the room's event log (a stream) in the same step, so a
  peer whose event stream drops can be given what it missed (resume.lua). Each published
  message carries its position, "<log entry id>-<n>" for the n-th message of the entry,
  which becomes part of the SSE event id.

    KEYS[1] room members hash    sb:room:{R}:members    field peer id -> user JSON
    KEYS[2] room event log       sb:room:{R}:log        stream

    ARGV[1] room id
    ARGV[2] joiner's peer id
    ARGV[3] joiner's user JSON   {"id":P,"username":...}
    ARGV[4] channel prefix       sb:peer:{   (a peer's channel is prefix .. id .. "}:events")
    ARGV[5] maximum room size    (0: no limit)
    ARGV[6] log length kept      (entries, approximate)
    ARGV[7] log retention        (milliseconds since the last write)

  Log entry: "!" = "join <joiner>", then one field per message: recipient peer id ->
  "<event>\n<JSON>" (several entries if the room is very large).

  Returns the number of members the joiner was introduced to, ALREADY_MEMBER, or ROOM_FULL
  (for those two nothing changes, nothing is logged or published; codes in include/codes.lua).
  Publishes "!joined\n<room>=<entry id>-0\n" to the joiner's channel (the node holding its
  stream keeps track of its rooms), then "add-peer\n<room>=<position>\n<JSON>" to each
  member's channel and to the joiner's; the position is "<entry id>-<n>", n counting the
  entry's messages from 1.
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
-- The name of a peer's channel (sharded pub/sub, in the slot of the peer's keys), built from
-- the prefix a node passes: "sb:peer:{" .. id .. "}:events". Mirrors KeySpace.channel in
-- Sources/Coordinator/KeySpace.swift; the Lua tests check that the two agree.
local function peerChannel(prefix, peer)
  return prefix .. peer .. "}:events"
end
-- Shared by join.lua and leave.lua, which include it (after names.lua).
--
-- Writes messages {recipient, event, json} to a room's event log, at most 500 per entry
-- (field "!" = `marker`, then recipient -> "<event>\n<JSON>"), and SPUBLISHes each to its
-- recipient's channel as "<event>\n<room>=<entry id>-<n>\n<JSON>", n counting the entry's
-- messages from 1. With `always`, an empty list still writes one entry. `onFirstEntry(id)`
-- runs once the first entry is written, before anything is published. Returns the id of the
-- last entry written, or "0-0" if none was.
local function logAndPublish(log, maxLength, room, prefix, marker, messages, always, onFirstEntry)
  local id = "0-0"
  for first = 1, math.max(#messages, always and 1 or 0), 500 do
    local fields = {"!", marker}
    local last = math.min(first + 499, #messages)
    for i = first, last do
      fields[#fields + 1] = messages[i][1]
      fields[#fields + 1] = messages[i][2] .. "\n" .. messages[i][3]
    end
    id = redis.call("XADD", log, "MAXLEN", "~", maxLength, "*", unpack(fields))
    if first == 1 and onFirstEntry then onFirstEntry(id) end
    for i = first, last do
      local m = messages[i]
      redis.call("SPUBLISH", peerChannel(prefix, m[1]), m[2] .. "\n" .. room .. "=" .. id .. "-" .. (i - first + 1) .. "\n" .. m[3])
    end
  end
  return id
end

local members, log = KEYS[1], KEYS[2]
local room, joiner, joinerUser, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

if redis.call("HEXISTS", members, joiner) == 1 then
  return ALREADY_MEMBER
end
local maxMembers = tonumber(ARGV[5]) or 0
if maxMembers > 0 and redis.call("HLEN", members) >= maxMembers then
  return ROOM_FULL
end

local roomJSON = cjson.encode(room)
local toMembers = '{"peer":' .. joinerUser .. ',"roomId":' .. roomJSON .. ',"offer":false}'
local messages = {}
local entries = redis.call("HGETALL", members)
for i = 1, #entries, 2 do
  local member, memberUser = entries[i], entries[i + 1]
  messages[#messages + 1] = {member, "add-peer", toMembers}
  messages[#messages + 1] = {joiner, "add-peer", '{"peer":' .. memberUser .. ',"roomId":' .. roomJSON .. ',"offer":true}'}
end
-- An empty room still gets an entry: resume.lua finds where the joiner's membership began.
-- The joiner's node learns of the membership before any add-peer of it.
logAndPublish(log, ARGV[6], room, prefix, "join " .. joiner, messages, true, function(id)
  redis.call("SPUBLISH", peerChannel(prefix, joiner), "!joined\n" .. room .. "=" .. id .. "-0\n")
end)
redis.call("PEXPIRE", log, ARGV[7])
redis.call("HSET", members, joiner, joinerUser)
return #entries / 2
