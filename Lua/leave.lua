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
--- @include "codes.lua"
--- @include "names.lua"
--- @include "log-and-publish.lua"

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
