#!lua
--[[
  Adds a peer to a room, atomically with a snapshot of who is there, so that two peers joining
  at once always learn of each other exactly once: the later join's snapshot holds the earlier
  joiner, and the earlier joiner hears of the later one on the room's channel.

  Writes one entry to the room's event log and publishes it once, on the room's channel: each
  node holding streams of members turns it into "add-peer" (offer: false) for them. The
  joiner's own introductions do not go from here (its channel is in another slot):
  remember-room.lua, run next on the joiner's keys, is given the snapshot and position this
  returns, and sends them to the joiner as one message.

    KEYS[1] room members hash    sb:room:{R}:members    field peer id -> user JSON
    KEYS[2] room event log       sb:room:{R}:log        stream, field m

    ARGV[1] room channel         sb:room:{R}:events     (sharded pub/sub)
    ARGV[2] joiner's peer id
    ARGV[3] joiner's user JSON   {"id":P,"username":...}
    ARGV[4] maximum room size    (0: no limit)
    ARGV[5] log length kept      (entries, approximate)
    ARGV[6] log retention        (milliseconds since the last write)

  Log entry "join\n<peer id>\n<user JSON>", published as "<entry id>\n" .. entry.
  Returns {number of members before the join, the join's entry id, the members' user JSON one
  per line}; {ALREADY_MEMBER, the log's newest entry id ("0-0" if none), the other members'
  user JSON one per line}: nothing changes, and the snapshot lets the caller finish an earlier
  attempt that stopped before remember-room.lua; or ROOM_FULL: nothing changes (codes in
  include/codes.lua). (One string, not one per member: it goes back into remember-room.lua as
  one argument, and into its message as it is.)
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
-- Shared by every script that writes an event log (a Redis stream, one message per entry in
-- field "m"), and by read-log.lua.

-- Appends `message` to `log`, keeps the log `retention` milliseconds past this write (and
-- about `maxLength` entries), and SPUBLISHes "<entry id>\n<message>" on `channel`, in the
-- slot of the log's key. Returns the entry id and the number of nodes that received it.
local function appendAndPublish(log, channel, message, maxLength, retention)
  local id = redis.call("XADD", log, "MAXLEN", "~", maxLength, "*", "m", message)
  redis.call("PEXPIRE", log, retention)
  return id, redis.call("SPUBLISH", channel, id .. "\n" .. message)
end

-- The id of the newest entry in `log`, or "0-0" if it has none (it expired).
local function latestEntry(log)
  local newest = redis.call("XREVRANGE", log, "+", "-", "COUNT", 1)
  return newest[1] and newest[1][1] or "0-0"
end

local members, log = KEYS[1], KEYS[2]
local channel, joiner, joinerUser = ARGV[1], ARGV[2], ARGV[3]

if redis.call("HEXISTS", members, joiner) == 1 then
  local others = {}
  local entries = redis.call("HGETALL", members)
  for i = 1, #entries, 2 do
    if entries[i] ~= joiner then others[#others + 1] = entries[i + 1] end
  end
  return {ALREADY_MEMBER, latestEntry(log), table.concat(others, "\n")}
end
local maxMembers = tonumber(ARGV[4]) or 0
if maxMembers > 0 and redis.call("HLEN", members) >= maxMembers then
  return ROOM_FULL
end

local snapshot = redis.call("HVALS", members)
local id = appendAndPublish(log, channel, "join\n" .. joiner .. "\n" .. joinerUser, ARGV[5], ARGV[6])
redis.call("HSET", members, joiner, joinerUser)
return {#snapshot, id, table.concat(snapshot, "\n")}
