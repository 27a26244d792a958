#!lua
--[[
  Puts back a peer's session after Redis lost its data (a restart without persistence, a
  failover to a replica that was behind), as the node holding the peer's stream knows it.
  Nothing is published: the peer and the members of its rooms still have the views they
  had, and the node restores each room's membership next (HSETNX, silently too).

    KEYS[1] peer hash            sb:peer:{P}
    KEYS[2] peer rooms hash      sb:peer:{P}:rooms    field room id -> its join's entry id

    ARGV[1] session id           (the stream the node holds)
    ARGV[2] node id
    ARGV[3] user JSON
    ARGV[4..] the rooms the peer is in, each followed by where the stream is in its log
              (room id, entry id, room id, entry id, ...)

  Returns 1 if the session was put back, 0 if Redis still has a session for the peer (this
  one or a newer one: nothing to do).
]]
local peer, rooms = KEYS[1], KEYS[2]
local session, node, user = ARGV[1], ARGV[2], ARGV[3]

if redis.call("EXISTS", peer) == 1 then
  return 0
end
redis.call("HSET", peer, "session", session, "node", node, "user", user)
for i = 4, #ARGV - 1, 2 do
  redis.call("HSET", rooms, ARGV[i], ARGV[i + 1])
end
return 1
