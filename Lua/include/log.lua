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
