--[[
  Adds a peer to a room and introduces it to every member, in one atomic step, so two
  peers joining at once always learn of each other exactly once.

  Each existing member M is told "add-peer" about the joiner with offer=false, and the
  joiner is told "add-peer" about M with offer=true (the joiner makes the WebRTC offers).
  Joining a room one is already in changes nothing and publishes nothing.

    KEYS[1] room members hash    sb:room:{R}:members    field peer id -> user JSON

    ARGV[1] room id
    ARGV[2] joiner's peer id
    ARGV[3] joiner's user JSON   {"id":P,"username":...}
    ARGV[4] channel prefix       sb:to:   (a peer's channel is prefix .. peer id)
    ARGV[5] maximum room size    (optional; missing or 0: no limit)

  Returns the number of members the joiner was introduced to, -1 if it was already a member,
  or -2 if the room is full (then nothing changes and nothing is published).
  Publishes "add-peer\n<JSON>" to each member's channel and to the joiner's.
]]
local members = KEYS[1]
local room, joiner, joinerUser, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

if redis.call("HEXISTS", members, joiner) == 1 then
  return -1
end
local maxMembers = tonumber(ARGV[5]) or 0
if maxMembers > 0 and redis.call("HLEN", members) >= maxMembers then
  return -2
end

local roomJSON = cjson.encode(room)
local toMembers = "add-peer\n" .. '{"peer":' .. joinerUser .. ',"roomId":' .. roomJSON .. ',"offer":false}'
local entries = redis.call("HGETALL", members)
for i = 1, #entries, 2 do
  local member, memberUser = entries[i], entries[i + 1]
  redis.call("PUBLISH", prefix .. member, toMembers)
  redis.call("PUBLISH", prefix .. joiner,
    "add-peer\n" .. '{"peer":' .. memberUser .. ',"roomId":' .. roomJSON .. ',"offer":true}')
end
redis.call("HSET", members, joiner, joinerUser)
return #entries / 2
