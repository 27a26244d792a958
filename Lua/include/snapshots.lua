-- A room's members as they were at an entry of its log: shared by join.lua and leave.lua,
-- which return them to the peer's script of a join or leave.
--- @include "history.lua"

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
