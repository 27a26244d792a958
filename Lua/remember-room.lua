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
    ARGV[7] the members' user JSON at that entry, one per line (the HVALS read with join.lua,
            or its ALREADY_MEMBER reply; "" for none)

  Log entry "joined\n<room id>\n<entry id>\n<user JSON>\n<user JSON>..." (one line per
  member, none for an empty room), published as "<peer log entry id>\n" .. entry.
  Returns 1 if recorded and sent, 0 if the room was recorded already, NO_SESSION if the peer
  has no session, TOO_MANY_ROOMS if it is in the maximum number of rooms already (for those
  two the caller must undo the join; codes in include/codes.lua).
]]
--- @include "codes.lua"
--- @include "log.lua"

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
