--[[
  Routes a relayed message to the peer it is addressed to, if that peer has a stream.

  The message goes to the peer's channel, which only the node holding the peer's stream
  subscribes to; that node writes it to the stream.

    KEYS[1] target's peer hash   sb:peer:{P}

    ARGV[1] target's channel     sb:to:P
    ARGV[2] message              "<event>\n<JSON>"

  Returns -1 if the target has no stream, else the number of nodes that received the
  message (0 if the node holding the stream is gone).
]]
if redis.call("EXISTS", KEYS[1]) == 0 then
  return -1
end
return redis.call("PUBLISH", ARGV[1], ARGV[2])
