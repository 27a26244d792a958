#!lua
--[[
  Takes a peer out of a room and tells the remaining members, atomically with a snapshot of
  who remains (read by the caller, see below). The last member to leave deletes the room's
  members key (Redis drops an empty hash); the log expires by itself.

  Writes one entry to the room's event log and publishes it once, on the room's channel: each
  node holding streams of members turns it into "remove-peer" for them. On an explicit leave
  the leaver is told "remove-peer" about each remaining member too: forget-room.lua, run next
  on the leaver's keys, is given that snapshot. When the peer's stream is gone
  there is nobody to tell, and ARGV[3] is "0".

    KEYS[1] room members hash    sb:room:{R}:members    field peer id -> user JSON
    KEYS[2] room event log       sb:room:{R}:log        stream, field m
    KEYS[3] room joins hash      sb:room:{R}:joins      field peer id -> its join's entry id

    ARGV[1] room channel         sb:room:{R}:events     (sharded pub/sub)
    ARGV[2] leaver's peer id
    ARGV[3] "1" if the caller tells the leaver who remains (a NOT_MEMBER reply then says
            who did), "0" if not
    ARGV[4] log length kept      (entries, approximate)
    ARGV[5] log retention        (milliseconds since the last write)

  Who remains the caller reads with HVALS on KEYS[1] just after this, in the same
  MULTI ... EXEC (nothing runs between them), as join.lua's caller does.

  Log entry "leave\n<peer id>\n<user JSON>", published as "<entry id>\n" .. entry.
  Returns {number of remaining members, the leave's entry id}; or {NOT_MEMBER, the peer's
  latest leave's entry id, the members' user JSON one per line as they were right after it
  ("" unless asked for)}: nothing changes,
  and the snapshot lets the caller finish an earlier attempt that stopped before
  forget-room.lua, exactly as that attempt would have (if the log holds no leave of the peer,
  the snapshot is as of the log's newest entry, "0-0" if none; codes in include/codes.lua).
]]
--- @include "codes.lua"
--- @include "log.lua"
--- @include "snapshots.lua"

local members, log, joins = KEYS[1], KEYS[2], KEYS[3]
local channel, leaver, snapshotWanted = ARGV[1], ARGV[2], ARGV[3] == "1"

local leaverUser = redis.call("HGET", members, leaver)
if not leaverUser then
  if not snapshotWanted then return {NOT_MEMBER, latestEntry(log), ""} end
  local asOf = hashTable(members)
  local position = membersAsOf(log, asOf, nil, leaver)
  if not position then
    asOf, position = hashTable(members), latestEntry(log)
  end
  return {NOT_MEMBER, position, lines(asOf)}
end
redis.call("HDEL", members, leaver)
redis.call("HDEL", joins, leaver)
local id = appendAndPublish(log, channel, "leave\n" .. leaver .. "\n" .. leaverUser, ARGV[4], ARGV[5])
return {redis.call("HLEN", members), id}
