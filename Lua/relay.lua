--[[
  Routes a relayed message to the peer it is addressed to, if that peer has a stream and
  shares a room with the sender (a stranger cannot message anyone by id).

  The message goes to the peer's channel, which only the node holding the peer's stream
  subscribes to; that node writes it to the stream. The sender's rooms are read by the node
  just before (they live in the sender's slot); the check against the target's rooms is
  atomic with the delivery.

    KEYS[1] target's peer hash   sb:peer:{P}
    KEYS[2] target's rooms set   sb:peer:{P}:rooms

    ARGV[1] target's channel     sb:to:P
    ARGV[2] message              "<event>\n<JSON>"
    ARGV[3..] the sender's room ids

  Returns -1 if the target has no stream, -2 if it shares no room with the sender, else the
  number of nodes that received the message (0 if the node holding the stream is gone).
]]
if redis.call("EXISTS", KEYS[1]) == 0 then
  return -1
end
for i = 3, #ARGV do
  if redis.call("SISMEMBER", KEYS[2], ARGV[i]) == 1 then
    return redis.call("PUBLISH", ARGV[1], ARGV[2])
  end
end
return -2
