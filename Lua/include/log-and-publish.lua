-- Shared by join.lua and leave.lua, which include it (after names.lua).
--
-- Writes messages {recipient, event, json} to a room's event log, at most 500 per entry
-- (field "!" = `marker`, then recipient -> "<event>\n<JSON>"), and SPUBLISHes each to its
-- recipient's channel as "<event>\n<room>=<entry id>-<n>\n<JSON>", n counting the entry's
-- messages from 1. With `always`, an empty list still writes one entry. `onFirstEntry(id)`
-- runs once the first entry is written, before anything is published. Returns the id of the
-- last entry written, or "0-0" if none was.
local function logAndPublish(log, maxLength, room, prefix, marker, messages, always, onFirstEntry)
  local id = "0-0"
  for first = 1, math.max(#messages, always and 1 or 0), 500 do
    local fields = {"!", marker}
    local last = math.min(first + 499, #messages)
    for i = first, last do
      fields[#fields + 1] = messages[i][1]
      fields[#fields + 1] = messages[i][2] .. "\n" .. messages[i][3]
    end
    id = redis.call("XADD", log, "MAXLEN", "~", maxLength, "*", unpack(fields))
    if first == 1 and onFirstEntry then onFirstEntry(id) end
    for i = first, last do
      local m = messages[i]
      redis.call("SPUBLISH", peerChannel(prefix, m[1]), m[2] .. "\n" .. room .. "=" .. id .. "-" .. (i - first + 1) .. "\n" .. m[3])
    end
  end
  return id
end
