--[[
  Removes a peer from a room and tells every remaining member, in one atomic step. The
  last member to leave deletes the room's key (Redis drops an empty hash).

  On an explicit leave the leaver is also told "remove-peer" about each remaining member,
  so its own view of the room empties too. When the peer's stream is gone there is nobody
  to tell, and ARGV[4] is "0".

    KEYS[1] room members hash    sb:room:{R}:members    field peer id -> user JSON

    ARGV[1] room id
    ARGV[2] leaver's peer id
    ARGV[3] channel prefix       sb:to:
    ARGV[4] "1" to tell the leaver about the remaining members, "0" not to

  Returns the number of remaining members told, or -1 if the peer was not a member
  (then nothing changes and nothing is published).
  Publishes "remove-peer\n<JSON>" to each remaining member's channel (and the leaver's).
]]
local members = KEYS[1]
local room, leaver, prefix, tellLeaver = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == "1"

local leaverUser = redis.call("HGET", members, leaver)
if not leaverUser then
  return -1
end
redis.call("HDEL", members, leaver)

local roomJSON = cjson.encode(room)
local toMembers = "remove-peer\n" .. '{"peer":' .. leaverUser .. ',"roomId":' .. roomJSON .. '}'
local entries = redis.call("HGETALL", members)
for i = 1, #entries, 2 do
  local member, memberUser = entries[i], entries[i + 1]
  redis.call("PUBLISH", prefix .. member, toMembers)
  if tellLeaver then
    redis.call("PUBLISH", prefix .. leaver,
      "remove-peer\n" .. '{"peer":' .. memberUser .. ',"roomId":' .. roomJSON .. '}')
  end
end
return #entries / 2
