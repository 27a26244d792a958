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

local log, from = KEYS[1], ARGV[1]
local exclusive = string.sub(from, 1, 1) == "("
local start = exclusive and string.sub(from, 2) or from

-- Entry ids compare as (milliseconds, sequence).
local function parse(id)
  local ms, seq = string.match(id, "^(%d+)-(%d+)$")
  if not ms then return nil end
  return tonumber(ms), tonumber(seq)
end
local startMs, startSeq = parse(start)
if not startMs then return redis.error_reply("ERR invalid log position " .. from) end

local oldest = redis.call("XRANGE", log, "-", "+", "COUNT", 1)[1]
if not oldest then
  return {}  -- expired, or never written
end
-- Redis trims the oldest entries first. If any were trimmed and the oldest kept is later than
-- the start, some of what was asked for may be gone (Redis 7.0 does not record which was the
-- newest trimmed, so a start just before the oldest kept counts as trimmed too).
local oldestMs, oldestSeq = parse(oldest[1])
if oldestMs > startMs or (oldestMs == startMs and oldestSeq > startSeq) then
  local info, length, added = redis.call("XINFO", "STREAM", log), 0, 0
  for i = 1, #info, 2 do
    if info[i] == "length" then length = info[i + 1] elseif info[i] == "entries-added" then added = info[i + 1] end
  end
  if added > length then return LOG_TRIMMED end
end

local messages = {}
for _, entry in ipairs(redis.call("XRANGE", log, from, "+")) do
  messages[#messages + 1] = entry[1]
  messages[#messages + 1] = entry[2][2]
end
return messages
