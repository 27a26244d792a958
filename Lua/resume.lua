#!lua
--[[
  Reads back, from one event log, the messages a peer was sent after a given position: what
  a resuming client missed while its stream was down. Run once per room the peer is (or
  was) in and once on the peer's own log (relays).

  A position is "<log entry id>-<n>": the n-th message of that entry (join.lua and leave.lua
  write one entry per call, holding every message the call published).

    KEYS[1] event log            sb:room:{R}:log or sb:peer:{P}:log

    ARGV[1] the peer's id
    ARGV[2] the last position the client saw in this log (exclusive), or "" for "since the
            peer's latest join" (a room it joined after the last event it saw)

  Returns a flat array {position, "<event>\n<JSON>", ...} in log order (for "", starting
  with {"<join entry id>-0", "!joined\n"}: where the membership began), or LOG_TRIMMED when
  the log no longer holds everything after that point (trimmed, or the join is gone): then
  the session cannot be resumed exactly (codes in include/codes.lua).
]]
--- @include "codes.lua"

local log, peer, after = KEYS[1], ARGV[1], ARGV[2]

local function isAfter(a, b)
  local ams, aseq = string.match(a, "^(%d+)-(%d+)")
  local bms, bseq = string.match(b, "^(%d+)-(%d+)")
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams > bms or (ams == bms and aseq > bseq)
end

if redis.call("EXISTS", log) == 0 then
  if after == "" then return LOG_TRIMMED end
  return {}
end

-- From entry `start` (inclusive), skipping its first `skip` messages.
local start, skip
local missed = {}
if after == "" then
  -- Walk back to the peer's latest join (its first entry, if the join took several).
  local marker = "join " .. peer
  local upper, done = "+", false
  while not done do
    local batch = redis.call("XREVRANGE", log, upper, "-", "COUNT", 100)
    for _, entry in ipairs(batch) do
      if entry[2][1] == "!" and entry[2][2] == marker then
        start = entry[1]
      elseif start then
        done = true
        break
      end
    end
    if #batch < 100 then done = true else upper = "(" .. batch[#batch][1] end
  end
  if not start then return LOG_TRIMMED end
  skip = 0
  -- Tells the node where the membership began, so the room enters the stream's cursor even
  -- if nothing was sent to the peer from it yet.
  missed = {start .. "-0", "!joined\n"}
else
  local ms, seq, n = string.match(after, "^(%d+)-(%d+)-(%d+)$")
  if not ms then return redis.error_reply("ERR invalid position " .. after) end
  start, skip = ms .. "-" .. seq, tonumber(n)
  -- Trimmed entries are the oldest: if any were trimmed and the oldest kept is later than
  -- the client's, some of what it missed may be gone.
  local info, length, added, first = redis.call("XINFO", "STREAM", log), 0, 0, nil
  for i = 1, #info, 2 do
    if info[i] == "length" then length = info[i + 1]
    elseif info[i] == "entries-added" then added = info[i + 1]
    elseif info[i] == "first-entry" then first = info[i + 1] and info[i + 1][1] end
  end
  if added > length and first and isAfter(first, start) then
    return LOG_TRIMMED
  end
end

for _, entry in ipairs(redis.call("XRANGE", log, start, "+")) do
  local id, fields = entry[1], entry[2]
  local n = 0
  for i = 1, #fields, 2 do
    if fields[i] ~= "!" then
      n = n + 1
      if fields[i] == peer and (id ~= start or n > skip) then
        missed[#missed + 1] = id .. "-" .. n
        missed[#missed + 1] = fields[i + 1]
      end
    end
  end
end
return missed
