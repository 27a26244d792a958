#!lua
--[[
  After leave.lua took a peer out of a room on an explicit leave: forgets the room on the peer
  and tells it "remove-peer" about every member that remained (leave.lua's snapshot), as one
  message on the peer's channel and in its log. Runs on the peer's keys (leave.lua runs on
  the room's).

  The message is sent only when the room leaves the peer's rooms hash: a leave that is
  repeated (its first reply was lost) sends nothing twice. It also carries where the peer's
  membership began, so a resuming stream reads the room's log from no earlier than that.

    KEYS[1] peer hash            sb:peer:{P}
    KEYS[2] peer rooms hash      sb:peer:{P}:rooms    field room id -> its join's entry id
    KEYS[3] peer event log       sb:peer:{P}:log      stream, field m

    ARGV[1] room id
    ARGV[2] peer channel         sb:peer:{P}:events   (sharded pub/sub)
    ARGV[3] the room log's entry id the snapshot is as of (leave.lua's reply)
    ARGV[4] log length kept      (entries, approximate)
    ARGV[5] log retention        (milliseconds since the last write)
    ARGV[6] the remaining members' user JSON at that entry, one per line (the HVALS read
            with leave.lua, or its NOT_MEMBER reply)

  Log entry "left\n<room id>\n<entry id>\n<join's entry id>\n<user JSON>\n..." (one line per
  member), published as "<peer log entry id>\n" .. entry.
  Returns 1 if the room was forgotten and the peer told, 0 if the peer had no such room
  (nothing sent), NO_SESSION if it has no session (the room is forgotten; nobody to tell;
  codes in include/codes.lua).
]]
--- @include "codes.lua"
--- @include "log.lua"

local peer, rooms, log = KEYS[1], KEYS[2], KEYS[3]
local room, channel, position = ARGV[1], ARGV[2], ARGV[3]

local joinedAt = redis.call("HGET", rooms, room)
if not joinedAt then
  return 0
end
redis.call("HDEL", rooms, room)
if redis.call("EXISTS", peer) == 0 then
  return NO_SESSION
end
local message = "left\n" .. room .. "\n" .. position .. "\n" .. joinedAt
if ARGV[6] ~= "" then message = message .. "\n" .. ARGV[6] end
appendAndPublish(log, channel, message, ARGV[4], ARGV[5])
return 1
