#!lua
--[[
  Puts back a peer's session after Redis may have lost its data (a restart without
  persistence, a failover to a replica that was behind, on one server or one shard of a
  cluster), as the node holding the peer's stream knows it. Safe to run when nothing was
  lost. Nothing is published: the peer and the members of its rooms still have the views they
  had, and the node restores each room's membership next (HSETNX, silently too).

    KEYS[1] peer hash            sb:peer:{P}
    KEYS[2] peer rooms hash      sb:peer:{P}:rooms    field room id -> its join's entry id

    ARGV[1] session id           (the stream the node holds)
    ARGV[2] node id
    ARGV[3] user JSON
    ARGV[4..] the rooms the peer is in, each followed by where the stream is in its log
              (room id, entry id, room id, entry id, ...)

  Returns 1 if the session was put back; 2 if Redis still has this session (any of its
  rooms Redis lost are recorded again); 0 if Redis has a newer session for the peer
  (nothing to do: this stream is being replaced).
]]
local peer, rooms = KEYS[1], KEYS[2]
local session, node, user = ARGV[1], ARGV[2], ARGV[3]

local current = redis.call("HGET", peer, "session")
if current and current ~= session then
  return 0
end
if not current then
  redis.call("HSET", peer, "session", session, "node", node, "user", user)
end
for i = 4, #ARGV - 1, 2 do
  redis.call("HSETNX", rooms, ARGV[i], ARGV[i + 1])
end
return current and 2 or 1
