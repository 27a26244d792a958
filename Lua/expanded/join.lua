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
-- field "m").

-- Appends `message` to `log`, keeps the log `retention` milliseconds past this write (and
-- about `maxLength` entries), and SPUBLISHes "<entry id>\n<message>" on `channel`, in the
-- slot of the log's key. Returns the entry id and the number of nodes that received it.
local function appendAndPublish(log, channel, message, maxLength, retention)
  local id = redis.call("XADD", log, "MAXLEN", "~", maxLength, "*", "m", message)
  redis.call("PEXPIRE", log, retention)
  return id, redis.call("SPUBLISH", channel, id .. "\n" .. message)
end
-- A room's members as they were at an entry of its log: shared by join.lua and leave.lua,
-- which return them to the peer's script of a join or leave.
-- Reading an event log's history: shared by read-log.lua, and by join.lua and leave.lua
-- (through snapshots.lua).

-- The id of the newest entry in `log`, or "0-0" if it has none (it expired).
local function latestEntry(log)
  local newest = redis.call("XREVRANGE", log, "+", "-", "COUNT", 1)
  return newest[1] and newest[1][1] or "0-0"
end

-- Whether entry id `a` comes after `b` (ids compare as milliseconds, then sequence).
local function entryAfter(a, b)
  local ams, aseq = string.match(a, "^(%d+)-(%d+)$")
  local bms, bseq = string.match(b, "^(%d+)-(%d+)$")
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams > bms or (ams == bms and aseq > bseq)
end

-- Whether `log` still holds every entry after `id`: Redis trims the oldest entries first, so
-- none is missing unless some were trimmed and the oldest kept is later than `id` (Redis 7.0
-- does not record which was the newest trimmed, so an `id` just before the oldest kept counts
-- as trimmed too).
local function completeAfter(log, id)
  local oldest = redis.call("XRANGE", log, "-", "+", "COUNT", 1)[1]
  if not oldest or not entryAfter(oldest[1], id) then return true end
  local info, length, added = redis.call("XINFO", "STREAM", log), 0, 0
  for i = 1, #info, 2 do
    if info[i] == "length" then length = info[i + 1] elseif info[i] == "entries-added" then added = info[i + 1] end
  end
  return added <= length
end

-- A room's members as they were right after entry `id` (a table peer id -> user JSON, changed
-- in place from the members now), by undoing, newest first, the joins and leaves logged after
-- it. With `stopAtLeaveOf`, walks back only to that peer's latest leave, and takes its id as
-- `id`. Returns the id, or nil if the log no longer holds what it takes (given `id`, it then has
-- changed nothing).
local function membersAsOf(log, members, id, stopAtLeaveOf)
  if id and not completeAfter(log, id) then return nil end
  local upper = "+"
  while true do
    local batch = redis.call("XREVRANGE", log, upper, id and ("(" .. id) or "-", "COUNT", 100)
    for _, entry in ipairs(batch) do
      local kind, peer, user = string.match(entry[2][2], "^(%a+)\n([^\n]*)\n(.*)$")
      if stopAtLeaveOf and kind == "leave" and peer == stopAtLeaveOf then return entry[1] end
      if kind == "join" then members[peer] = nil elseif kind == "leave" then members[peer] = user end
    end
    if #batch < 100 then return (not stopAtLeaveOf) and id or nil end
    upper = "(" .. batch[#batch][1]
  end
end

-- The values of a table peer id -> user JSON, one per line (the snapshots scripts return).
local function lines(members, except)
  local values = {}
  for peer, user in pairs(members) do
    if peer ~= except then values[#values + 1] = user end
  end
  return table.concat(values, "\n")
end

-- A hash's fields and values as a table.
local function hashTable(key)
  local flat, result = redis.call("HGETALL", key), {}
  for i = 1, #flat, 2 do result[flat[i]] = flat[i + 1] end
  return result
end

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
