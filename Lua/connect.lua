--[[
  Registers a peer's new event stream and makes it the peer's only stream.

  The node holding the new stream has already subscribed to the peer's channel. The
  "!session" control message published here marks, in the channel's own order, where the
  new stream starts: the node holding the new stream delivers what follows it, and any node
  holding an older stream for the same peer closes that stream when it sees it.

    KEYS[1] peer hash            sb:peer:{P}        fields: session, node, user

    ARGV[1] session id           (new stream)
    ARGV[2] node id              (node holding the stream)
    ARGV[3] user JSON            {"id":P,"username":...}
    ARGV[4] peer channel         sb:to:P

  Returns the session id this one replaced, or "" if the peer had no stream.
  Publishes "!session\n<session id>" to the peer channel.
]]
local previous = redis.call("HGET", KEYS[1], "session") or ""
redis.call("HSET", KEYS[1], "session", ARGV[1], "node", ARGV[2], "user", ARGV[3])
redis.call("PUBLISH", ARGV[4], "!session\n" .. ARGV[1])
return previous
