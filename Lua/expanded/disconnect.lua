#!lua
--[[
  Ends a peer's session: deletes the peer's keys and hands back the rooms it was in, which
  the node then leaves one by one with leave.lua (each room's keys hash to their own slot,
  so one script cannot touch them all). Does nothing if a newer stream has taken over the
  session: the rooms then belong to the newer stream.

    KEYS[1] peer hash            sb:peer:{P}
    KEYS[2] peer rooms hash      sb:peer:{P}:rooms    field room id -> its join's entry id
    KEYS[3] peer event log       sb:peer:{P}:log

    ARGV[1] session id to end, or "" for whatever session the peer has (a fresh start)

  Returns the room ids the peer was in (a flat array; empty if the session was replaced), or
  NO_SESSION if the peer has no session at all (ended before, or Redis lost it: the node
  checks; codes in include/codes.lua).
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

local peer, rooms, log = KEYS[1], KEYS[2], KEYS[3]
local ending = ARGV[1]

local session = redis.call("HGET", peer, "session")
if not session then
  return NO_SESSION
end
if ending ~= "" and session ~= ending then
  return {}
end
local left = redis.call("HKEYS", rooms)
redis.call("DEL", peer, rooms, log)
return left
