import NIOCore

/// What the scripts write to the event logs, decoded in one place. A log entry holds one
/// message in its field `m`, lines separated by LF (user JSON and relay data are compact JSON,
/// which holds no raw LF); a channel carries `<entry id>\n<message>`.
enum LogMessage: Sendable {
    // In a room's log (join.lua, leave.lua):
    case join(peer: PeerID, user: ByteBuffer)
    case leave(peer: PeerID, user: ByteBuffer)
    // In a peer's own log (relay.lua, remember-room.lua, forget-room.lua):
    case relay(event: String, data: ByteBuffer)
    /// The peer joined `room`; `members` (user JSON) were there as of the room's entry `at`.
    case introductions(room: RoomID, at: EntryID, members: [ByteBuffer])
    /// The peer left `room` at its entry `at`, leaving `members`; it had joined at `joinedAt`.
    case farewells(room: RoomID, at: EntryID, joinedAt: EntryID, members: [ByteBuffer])

    init?(_ message: ByteBuffer) {
        var message = message
        guard let kind = message.readLine() else { return nil }
        switch kind {
        case "join", "leave":
            guard let peer = message.readLine().flatMap(PeerID.init) else { return nil }
            self = kind == "join" ? .join(peer: peer, user: message) : .leave(peer: peer, user: message)
        case "relay":
            guard let event = message.readLine() else { return nil }
            self = .relay(event: event, data: message)
        case "joined", "left":
            guard let room = message.readLine().flatMap(RoomID.init), let at = message.readLine().flatMap(EntryID.init) else { return nil }
            if kind == "joined" {
                self = .introductions(room: room, at: at, members: message.lines())
            } else {
                guard let joinedAt = message.readLine().flatMap(EntryID.init) else { return nil }
                self = .farewells(room: room, at: at, joinedAt: joinedAt, members: message.lines())
            }
        default:
            return nil
        }
    }
}

/// A message on a peer's or a room's channel.
enum ChannelMessage: Sendable {
    /// `!session\n<session id>`: where a peer's new stream starts (connect.lua; not logged).
    case session(String)
    /// A log entry, as it was written.
    case entry(EntryID, LogMessage)

    init?(_ payload: ByteBuffer) {
        var payload = payload
        guard let first = payload.readLine() else { return nil }
        if first == "!session" {
            self = .session(String(buffer: payload))
        } else {
            guard let id = EntryID(first), let message = LogMessage(payload) else { return nil }
            self = .entry(id, message)
        }
    }
}

extension ByteBuffer {
    /// Reads up to the next LF and skips it, or the rest if it holds none; nil if nothing is left.
    fileprivate mutating func readLine() -> String? {
        guard readableBytes > 0 else { return nil }
        guard let newline = readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return readString(length: readableBytes) }
        defer { moveReaderIndex(forwardBy: 1) }
        return readString(length: newline - readerIndex)
    }

    /// The rest, split at LF (none if empty), as slices of this buffer.
    fileprivate func lines() -> [ByteBuffer] {
        var rest = self
        var lines: [ByteBuffer] = []
        while rest.readableBytes > 0 {
            let length = rest.readableBytesView.firstIndex(of: UInt8(ascii: "\n")).map { $0 - rest.readerIndex } ?? rest.readableBytes
            lines.append(rest.readSlice(length: length)!)
            rest.moveReaderIndex(forwardBy: min(1, rest.readableBytes))
        }
        return lines
    }
}
