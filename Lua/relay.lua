#!lua
--[[
  Routes a relayed message to the peer it is addressed to, if that peer has a session and
  shares a room with the sender (a stranger cannot message anyone by id).

  The message is written to the target's event log and published on the target's channel in
  one step. Only the node holding the peer's stream subscribes to that channel; if the peer
  is between streams (it dropped and may resume), the log keeps the message for read-log.lua.
  On a single Redis the script reads the sender's rooms itself (KEYS[4]): one round trip, and
  the whole check is atomic with the delivery. On a cluster the sender's rooms live in another
  slot, so the node reads them just before and passes them as ARGV[6..]; the check against the
  target's rooms is still atomic with the delivery.

    KEYS[1] target's peer hash   sb:peer:{P}
    KEYS[2] target's rooms hash  sb:peer:{P}:rooms    field room id -> its join's entry id
    KEYS[3] target's event log   sb:peer:{P}:log      stream, field m
    KEYS[4] sender's rooms hash  sb:peer:{S}:rooms    (single Redis only; then no ARGV[6..])

    ARGV[1] target's channel     sb:peer:{P}:events   (sharded pub/sub)
    ARGV[2] event name
    ARGV[3] JSON data            {"peer":...,"data":...}
    ARGV[4] log length kept      (entries, approximate)
    ARGV[5] log retention        (milliseconds since the last write)
    ARGV[6..] the sender's room ids (on a cluster)

  Log entry "relay\n<event>\n<JSON>", published as "<entry id>\n" .. entry.
  Returns NO_SESSION if the target has no session, NO_SHARED_ROOM if it shares no room with
  the sender (codes in include/codes.lua), else the number of nodes that received the message
  (0: no stream right now; kept in the log).
]]
--- @include "codes.lua"
--- @include "log.lua"

local peer, rooms, log = KEYS[1], KEYS[2], KEYS[3]
local channel, event, data = ARGV[1], ARGV[2], ARGV[3]

if redis.call("EXISTS", peer) == 0 then
  return NO_SESSION
end
-- Whether the target is in one of candidates[first..] (a loop, not unpack: a peer allowed any
-- number of rooms may pass more than Lua can unpack).
local function sharesARoom(candidates, first)
  for i = first, #candidates do
    if redis.call("HEXISTS", rooms, candidates[i]) == 1 then
      return true
    end
  end
  return false
end

local shared
if KEYS[4] then
  shared = sharesARoom(redis.call("HKEYS", KEYS[4]), 1)
else
  shared = sharesARoom(ARGV, 6)
end
if not shared then
  return NO_SHARED_ROOM
end
local _, receivers = appendAndPublish(log, channel, "relay\n" .. event .. "\n" .. data, ARGV[4], ARGV[5])
return receivers
