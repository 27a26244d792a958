-- The return codes every script uses, one meaning each (mirrored by `ScriptCode` in
-- Sources/Coordinator/ScriptCalls.swift). A script that changed nothing says why with one.
local NO_SESSION = -1      -- the peer has no session: it never connected, or it is gone
local NOT_MEMBER = -2      -- the peer is not in the room
local ALREADY_MEMBER = -3  -- the peer is in the room already
local ROOM_FULL = -4       -- the room holds its maximum of members
local TOO_MANY_ROOMS = -5  -- the peer is in its maximum of rooms
local NO_SHARED_ROOM = -6  -- the target shares no room with the sender
local LOG_TRIMMED = -7     -- the log no longer holds everything after the position asked for
