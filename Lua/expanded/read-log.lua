#!lua
--[[
  Reads one event log from a position on: what a resuming stream missed (its own log and the
  log of each room it is in), and what a stream that just joined a room must catch up on
  from the join's position.

    KEYS[1] event log            sb:peer:{P}:log or sb:room:{R}:log   stream, field m

    ARGV[1] where to start: "<entry id>" to include that entry, "(<entry id>" to start
            after it

  Returns a flat array {entry id, message, entry id, message, ...} in log order (empty if the
  log has expired: nothing was written for longer than its retention), or LOG_TRIMMED when
  the log no longer holds every entry from there: then the reader cannot be given exactly
  what it missed (codes in include/codes.lua).
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

local log, from = KEYS[1], ARGV[1]
local exclusive = string.sub(from, 1, 1) == "("
local start = exclusive and string.sub(from, 2) or from

if not string.match(start, "^%d+-%d+$") then return redis.error_reply("ERR invalid log position " .. from) end
if not completeAfter(log, start) then return LOG_TRIMMED end

local messages = {}
for _, entry in ipairs(redis.call("XRANGE", log, from, "+")) do
  messages[#messages + 1] = entry[1]
  messages[#messages + 1] = entry[2][2]
end
return messages
