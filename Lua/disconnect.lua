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
--- @include "codes.lua"

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
