#!lua
--[[
  Routes a relayed message to the peer it is addressed to, if that peer has a session and
  shares a room with the sender (a stranger cannot message anyone by id).

  The message is written to the target's event log and published to the target's channel in
  one step. Only the node holding the peer's stream subscribes to that channel; if the peer
  is between streams (it dropped and may resume), the log keeps the message for resume.lua.
  The sender's rooms are read by the node just before (they live in the sender's slot); the
  check against the target's rooms is atomic with the delivery.

    KEYS[1] target's peer hash   sb:peer:{P}
    KEYS[2] target's rooms set   sb:peer:{P}:rooms
    KEYS[3] target's event log   sb:peer:{P}:log      stream

    ARGV[1] target's peer id
    ARGV[2] target's channel     sb:peer:{P}:events   (sharded pub/sub)
    ARGV[3] event name
    ARGV[4] JSON data            {"peer":...,"data":...}
    ARGV[5] log length kept      (entries, approximate)
    ARGV[6] log retention        (milliseconds since the last write)
    ARGV[7..] the sender's room ids

  Log entry: <target peer id> -> "<event>\n<JSON>".
  Returns NO_SESSION if the target has no session, NO_SHARED_ROOM if it shares no room with
  the sender (codes in include/codes.lua), else the number of nodes that received the message
  (0: no stream right now; kept in the log).
  Publishes "<event>\n=<log entry id>-1\n<JSON>" to the target's channel (the position of
  the entry's one message, as join.lua numbers them).
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
for i = 7, #ARGV do
  if redis.call("SISMEMBER", KEYS[2], ARGV[i]) == 1 then
    local id = redis.call("XADD", KEYS[3], "MAXLEN", "~", ARGV[5], "*", ARGV[1], ARGV[3] .. "\n" .. ARGV[4])
    redis.call("PEXPIRE", KEYS[3], ARGV[6])
    return redis.call("SPUBLISH", ARGV[2], ARGV[3] .. "\n=" .. id .. "-1\n" .. ARGV[4])
  end
end
return NO_SHARED_ROOM
