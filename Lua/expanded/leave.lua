#!lua
--[[
  Removes a peer from a room and tells every remaining member, in one atomic step. The
  last member to leave deletes the room's members key (Redis drops an empty hash); the log
  expires by itself.

  On an explicit leave the leaver is also told "remove-peer" about each remaining member,
  so its own view of the room empties too. When the peer's stream is gone there is nobody
  to tell, and ARGV[4] is "0". Messages are logged as in join.lua.

    KEYS[1] room members hash    sb:room:{R}:members    field peer id -> user JSON
    KEYS[2] room event log       sb:room:{R}:log        stream

    ARGV[1] room id
    ARGV[2] leaver's peer id
    ARGV[3] channel prefix       sb:peer:{   (a peer's channel is prefix .. id .. "}:events")
    ARGV[4] "1" to tell the leaver about the remaining members, "0" not to
    ARGV[5] log length kept      (entries, approximate)
    ARGV[6] log retention        (milliseconds since the last write)

  Returns the number of remaining members told, or NOT_MEMBER (then nothing changes and
  nothing is published; codes in include/codes.lua).
  Publishes "remove-peer\n<room>=<position>\n<JSON>" to each remaining member's channel
  (and the leaver's), then "!left\n<room>=<entry id>-0\n" to the leaver's, so the node holding its
  stream stops tracking the room in its event ids.
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
local room, leaver, prefix, tellLeaver = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == "1"

local leaverUser = redis.call("HGET", members, leaver)
if not leaverUser then
  return NOT_MEMBER
end
redis.call("HDEL", members, leaver)

local roomJSON = cjson.encode(room)
local toMembers = '{"peer":' .. leaverUser .. ',"roomId":' .. roomJSON .. '}'
local messages = {}
local entries = redis.call("HGETALL", members)
for i = 1, #entries, 2 do
  local member, memberUser = entries[i], entries[i + 1]
  messages[#messages + 1] = {member, "remove-peer", toMembers}
  if tellLeaver then
    messages[#messages + 1] = {leaver, "remove-peer", '{"peer":' .. memberUser .. ',"roomId":' .. roomJSON .. '}'}
  end
end

local id = logAndPublish(log, ARGV[5], room, prefix, "leave " .. leaver, messages, false)
if #messages > 0 then
  redis.call("PEXPIRE", log, ARGV[6])
end
redis.call("SPUBLISH", peerChannel(prefix, leaver), "!left\n" .. room .. "=" .. id .. "-0\n")
return #entries / 2
