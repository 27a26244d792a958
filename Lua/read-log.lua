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
--- @include "codes.lua"
--- @include "history.lua"

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
