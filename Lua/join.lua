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
--- @include "codes.lua"
--- @include "names.lua"
--- @include "log-and-publish.lua"

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
