/// A message's place in an event log (a Redis stream): the entry's id `<milliseconds>-<sequence>`
/// and the message's number within the entry (one join writes one entry holding every
/// message it published), as `<milliseconds>-<sequence>-<n>`.
public struct LogPosition: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let milliseconds: UInt64
    public let sequence: UInt64
    public let message: UInt64

    /// Before every entry.
    public static let start = LogPosition(milliseconds: 0, sequence: 0, message: 0)

    public init(milliseconds: UInt64, sequence: UInt64, message: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
        self.message = message
    }

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard text.utf8.count <= 62, parts.count == 3, let milliseconds = UInt64(parts[0]), let sequence = UInt64(parts[1]),
            let message = UInt64(parts[2])
        else { return nil }
        self.init(milliseconds: milliseconds, sequence: sequence, message: message)
    }

    public var description: String { "\(milliseconds)-\(sequence)-\(message)" }

    public static func < (a: Self, b: Self) -> Bool {
        (a.milliseconds, a.sequence, a.message) < (b.milliseconds, b.sequence, b.message)
    }
}

/// How far a peer's stream has got in each event log that feeds it: its own log (relays) and
/// the log of each room it is in. This is the SSE event id, so a client that reconnects with
/// `Last-Event-ID` says exactly where to resume: `<relay position>;<room>=<position>;…`.
/// Room ids cannot hold `;` or `=` (see `IdentifierRules`), so the text parses back unambiguously.
public struct EventCursor: Sendable, Equatable, CustomStringConvertible {
    public var relays: LogPosition
    public var rooms: [RoomID: LogPosition]

    /// Longest `Last-Event-ID` accepted, and most rooms in it.
    static let maxTextLength = 4096
    static let maxRooms = 64

    public init(relays: LogPosition = .start, rooms: [RoomID: LogPosition] = [:]) {
        self.relays = relays
        self.rooms = rooms
    }

    /// Parses a `Last-Event-ID`; nil if it is not one this server wrote.
    public init?(lastEventID text: String) {
        guard text.utf8.count <= Self.maxTextLength else { return nil }
        let parts = text.split(separator: ";", omittingEmptySubsequences: false)
        guard let relays = parts.first.flatMap(LogPosition.init), parts.count - 1 <= Self.maxRooms else { return nil }
        var rooms: [RoomID: LogPosition] = [:]
        for part in parts.dropFirst() {
            guard let equals = part.firstIndex(of: "="), let room = RoomID(part[..<equals]),
                let position = LogPosition(part[part.index(after: equals)...])
            else { return nil }
            rooms[room] = position
        }
        self.init(relays: relays, rooms: rooms)
    }

    public var description: String {
        var text = relays.description
        for (room, position) in rooms {
            text += ";"
            text += room.rawValue
            text += "="
            text += position.description
        }
        return text
    }

    /// The position in `source`'s log (nil: the peer's own log), if any.
    public func position(in source: RoomID?) -> LogPosition? {
        if let source { rooms[source] } else { relays }
    }

    /// Moves to `position` in `source`'s log; false if the cursor is already there or past it
    /// (the event was delivered before).
    mutating func advance(_ source: RoomID?, to position: LogPosition) -> Bool {
        if let current = self.position(in: source), position <= current { return false }
        if let source { rooms[source] = position } else { relays = position }
        return true
    }
}
