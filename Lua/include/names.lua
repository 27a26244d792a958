-- The name of a peer's channel (sharded pub/sub, in the slot of the peer's keys), built from
-- the prefix a node passes: "sb:peer:{" .. id .. "}:events". Mirrors KeySpace.channel in
-- Sources/Coordinator/KeySpace.swift; the Lua tests check that the two agree.
local function peerChannel(prefix, peer)
  return prefix .. peer .. "}:events"
end
