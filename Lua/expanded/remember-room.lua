#!lua
--[[
  Records, after join.lua added a peer to a room, that the peer is in that room, so the
  disconnect clean-up knows to take it out again. Runs on the peer's keys (join.lua runs
  on the room's), and only while the peer still has a stream: if the stream ended while
  the join was in flight, this returns 0 and the node undoes the join with leave.lua.
  Either this runs before disconnect.lua (which then sees the room) or after it (and
  refuses), so no peer is left in a room without a stream.

    KEYS[1] peer hash            sb:peer:{P}
    KEYS[2] peer rooms set       sb:peer:{P}:rooms

    ARGV[1] room id
    ARGV[2] maximum rooms per peer (optional; missing or 0: no limit)

  Returns 1 if recorded, NO_SESSION if the peer has no stream, TOO_MANY_ROOMS if it is in
  the maximum number of rooms already (for those two the caller must undo the join; codes in
  include/codes.lua).
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

if redis.call("EXISTS", KEYS[1]) == 0 then
  return NO_SESSION
end
local maxRooms = tonumber(ARGV[2]) or 0
if maxRooms > 0 and redis.call("SISMEMBER", KEYS[2], ARGV[1]) == 0 and redis.call("SCARD", KEYS[2]) >= maxRooms then
  return TOO_MANY_ROOMS
end
redis.call("SADD", KEYS[2], ARGV[1])
return 1
