#!lua
--[[
  Adds a peer to a room, atomically with a snapshot of who is there (read by the caller in
  the same transaction, see below), so that two peers joining at once always learn of each
  other exactly once: the later join's snapshot holds the earlier joiner, and the earlier
  joiner hears of the later one on the room's channel.

  Writes one entry to the room's event log and publishes it once, on the room's channel: each
  node holding streams of members turns it into "add-peer" (offer: false) for them. The
  joiner's own introductions do not go from here (its channel is in another slot):
  remember-room.lua, run next on the joiner's keys, is given the position this returns and
  the snapshot read with it, and sends them to the joiner as one message.

    KEYS[1] room members hash    sb:room:{R}:members    field peer id -> user JSON
    KEYS[2] room event log       sb:room:{R}:log        stream, field m
    KEYS[3] room joins hash      sb:room:{R}:joins      field peer id -> its join's entry id

    ARGV[1] room channel         sb:room:{R}:events     (sharded pub/sub)
    ARGV[2] joiner's peer id
    ARGV[3] joiner's user JSON   {"id":P,"username":...}
    ARGV[4] maximum room size    (0: no limit)
    ARGV[5] log length kept      (entries, approximate)
    ARGV[6] log retention        (milliseconds since the last write)

  Who the members were the caller reads with HVALS on KEYS[1] just before this, in the same
  MULTI ... EXEC (nothing runs between them): every member's user JSON would otherwise pass
  through Lua, which costs several times what HVALS does (Benchmarks/script-costs.sh).

  Log entry "join\n<peer id>\n<user JSON>", published as "<entry id>\n" .. entry.
  Returns {number of members before the join, the join's entry id}; {ALREADY_MEMBER, the
  join's entry id, the other members' user JSON one per line as they were right after it}
  (rebuilt from the log, so the HVALS read does not serve here): nothing changes, and the
  snapshot lets the caller finish an earlier attempt that stopped before remember-room.lua,
  exactly as that attempt would have
  (if the log no longer holds what came after the join, or Redis lost it, the snapshot is as
  of the log's newest entry, "0-0" if none); or ROOM_FULL: nothing changes (codes in
  include/codes.lua). (One string, not one per member: it goes into remember-room.lua as one
  argument.)
]]
--- @include "codes.lua"
--- @include "log.lua"
--- @include "snapshots.lua"

local members, log, joins = KEYS[1], KEYS[2], KEYS[3]
local channel, joiner, joinerUser = ARGV[1], ARGV[2], ARGV[3]

if redis.call("HEXISTS", members, joiner) == 1 then
  local joinedAt = redis.call("HGET", joins, joiner)
  local asOf = hashTable(members)
  -- (membersAsOf changes nothing when it cannot go back that far.)
  local position = joinedAt and membersAsOf(log, asOf, joinedAt) or latestEntry(log)
  return {ALREADY_MEMBER, position, lines(asOf, joiner)}
end
local count = redis.call("HLEN", members)
local maxMembers = tonumber(ARGV[4]) or 0
if maxMembers > 0 and count >= maxMembers then
  return ROOM_FULL
end

local id = appendAndPublish(log, channel, "join\n" .. joiner .. "\n" .. joinerUser, ARGV[5], ARGV[6])
redis.call("HSET", members, joiner, joinerUser)
redis.call("HSET", joins, joiner, id)
return {count, id}
