--[[
  Reads back, from one event log, the messages a peer was sent after a given log entry: what
  a resuming client missed while its stream was down. Run once per room the peer is (or
  was) in and once on the peer's own log (relays).

    KEYS[1] event log            sb:room:{R}:log or sb:peer:{P}:log

    ARGV[1] the peer's id
    ARGV[2] the last entry id the client saw from this log (exclusive), or "" for "since
            the peer's latest join" (a room it joined after the last event it saw)

  Returns a flat array {entry id, "<event>\n<JSON>", ...} in log order, or -1 when the log
  no longer holds everything after that point (trimmed, or the join is gone): then the
  session cannot be resumed exactly.
]]
local log, peer, after = KEYS[1], ARGV[1], ARGV[2]

local function parse(id)
  local ms, seq = string.match(id, "^(%d+)-(%d+)$")
  return tonumber(ms), tonumber(seq)
end
local function isAfter(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams > bms or (ams == bms and aseq > bseq)
end

if redis.call("EXISTS", log) == 0 then
  if after == "" then return -1 end
  return {}
end

local start
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
  if not start then return -1 end
else
  -- Trimmed entries are the oldest: if any were trimmed and the oldest kept is later than
  -- the client's, some of what it missed may be gone.
  local info, length, added, first = redis.call("XINFO", "STREAM", log), 0, 0, nil
  for i = 1, #info, 2 do
    if info[i] == "length" then length = info[i + 1]
    elseif info[i] == "entries-added" then added = info[i + 1]
    elseif info[i] == "first-entry" then first = info[i + 1] and info[i + 1][1] end
  end
  if added > length and first and isAfter(first, after) then
    return -1
  end
  start = "(" .. after
end

local missed = {}
for _, entry in ipairs(redis.call("XRANGE", log, start, "+")) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == peer then
      missed[#missed + 1] = entry[1]
      missed[#missed + 1] = fields[i + 1]
    end
  end
end
return missed
