#!lua
--[[
  Registers a peer's new event stream and makes it the peer's only stream.

  The node holding the new stream has already subscribed to the peer's channel. The
  "!session" control message published here marks, in the channel's own order, where the
  new stream starts: the node holding the new stream delivers what follows it, and any node
  holding an older stream for the same peer closes that stream when it sees it.

  A resuming stream (the client sent Last-Event-ID) takes over the peer's session if it
  still has one: rooms and event log stay, and the node replays what the client missed
  (read-log.lua). Otherwise this starts a fresh session with an empty event log.

    KEYS[1] peer hash            sb:peer:{P}        fields: session, node, user
    KEYS[2] peer event log       sb:peer:{P}:log

    ARGV[1] session id           (new stream)
    ARGV[2] node id              (node holding the stream)
    ARGV[3] user JSON            {"id":P,"username":...}
    ARGV[4] peer channel         sb:peer:{P}:events   (sharded pub/sub)
    ARGV[5] "resume" to take over an existing session, "fresh" not to

  Returns {1 if the session was resumed else 0, the session id this one replaced or ""}.
  Publishes "!session\n<session id>" to the peer channel.
]]
local peer, log = KEYS[1], KEYS[2]
local session, node, user, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local previous = redis.call("HGET", peer, "session") or ""
local resumed = ARGV[5] == "resume" and previous ~= ""
if not resumed then
  redis.call("DEL", log)
end
redis.call("HSET", peer, "session", session, "node", node, "user", user)
redis.call("SPUBLISH", channel, "!session\n" .. session)
return {resumed and 1 or 0, previous}
