#!lua
--[[
  Takes a peer out of a room and tells the remaining members, atomically with a snapshot of
  who remains. The last member to leave deletes the room's members key (Redis drops an empty
  hash); the log expires by itself.

  Writes one entry to the room's event log and publishes it once, on the room's channel: each
  node holding streams of members turns it into "remove-peer" for them. On an explicit leave
  the leaver is told "remove-peer" about each remaining member too: forget-room.lua, run next
  on the leaver's keys, is given the snapshot this returns. When the peer's stream is gone
  there is nobody to tell, and ARGV[3] is "0".

    KEYS[1] room members hash    sb:room:{R}:members    field peer id -> user JSON
    KEYS[2] room event log       sb:room:{R}:log        stream, field m

    ARGV[1] room channel         sb:room:{R}:events     (sharded pub/sub)
    ARGV[2] leaver's peer id
    ARGV[3] "1" to return the remaining members' user JSON, "0" not to
    ARGV[4] log length kept      (entries, approximate)
    ARGV[5] log retention        (milliseconds since the last write)

  Log entry "leave\n<peer id>\n<user JSON>", published as "<entry id>\n" .. entry.
  Returns {number of remaining members, the leave's entry id, their user JSON one per line
  ("" unless asked for)}; or {NOT_MEMBER, the log's newest entry id ("0-0" if none), the
  members' user JSON one per line ("" unless asked for)}: nothing changes, and the snapshot
  lets the caller finish an earlier attempt that stopped before forget-room.lua (codes in
  include/codes.lua).
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
local channel, leaver, snapshotWanted = ARGV[1], ARGV[2], ARGV[3] == "1"

local leaverUser = redis.call("HGET", members, leaver)
if not leaverUser then
  return {NOT_MEMBER, latestEntry(log), snapshotWanted and table.concat(redis.call("HVALS", members), "\n") or ""}
end
redis.call("HDEL", members, leaver)
local id = appendAndPublish(log, channel, "leave\n" .. leaver .. "\n" .. leaverUser, ARGV[4], ARGV[5])
local remaining = redis.call("HVALS", members)
return {#remaining, id, snapshotWanted and table.concat(remaining, "\n") or ""}
