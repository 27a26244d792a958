/// The id of an entry in an event log (a Redis stream): `<milliseconds>-<sequence>`.
public struct EntryID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let milliseconds: UInt64
    public let sequence: UInt64

    /// Before every entry.
    public static let zero = EntryID(milliseconds: 0, sequence: 0)

    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    public init?(_ text: some StringProtocol) {
        guard text.utf8.count <= 41, let dash = text.firstIndex(of: "-"), let milliseconds = UInt64(text[..<dash]),
            let sequence = UInt64(text[text.index(after: dash)...])
        else { return nil }
        self.init(milliseconds: milliseconds, sequence: sequence)
    }

    public var description: String { "\(milliseconds)-\(sequence)" }

    public static func < (a: Self, b: Self) -> Bool { (a.milliseconds, a.sequence) < (b.milliseconds, b.sequence) }
}

/// A place in a peer's own log: an entry, and how many of its events were delivered (a relay
/// is one event, a peer's introductions to a room one per member). `<entry id>-<count>`.
public struct LogPosition: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let entry: EntryID
    public let delivered: UInt64

    /// Before every entry.
    public static let start = LogPosition(entry: .zero, delivered: 0)

    public init(entry: EntryID, delivered: UInt64) {
        self.entry = entry
        self.delivered = delivered
    }

    public init?(_ text: some StringProtocol) {
        guard let dash = text.lastIndex(of: "-"), let entry = EntryID(text[..<dash]),
            let delivered = UInt64(text[text.index(after: dash)...])
        else { return nil }
        self.init(entry: entry, delivered: delivered)
    }

    public var description: String { "\(entry)-\(delivered)" }

    public static func < (a: Self, b: Self) -> Bool { (a.entry, a.delivered) < (b.entry, b.delivered) }
}

/// How far a peer's stream has got in each event log that feeds it: its own log (relays, and
/// its introductions to and farewells from rooms) and the log of each room it is in. This is
/// the SSE event id, so a client that reconnects with `Last-Event-ID` says exactly where to
/// resume: `2;<own log position>;<room>=<entry id>;…`. Room ids cannot hold `;` or `=` (see
/// `IdentifierRules`), so the text parses back unambiguously. The leading `2` is the format's
/// version: ids of the first format (which began with a position) start a fresh session.
public struct EventCursor: Sendable, Equatable, CustomStringConvertible {
    public var own: LogPosition
    public var rooms: [RoomID: EntryID]

    /// Longest `Last-Event-ID` accepted, and most rooms in it.
    static let maxTextLength = 4096
    static let maxRooms = 64
    static let version = "2"

    public init(own: LogPosition = .start, rooms: [RoomID: EntryID] = [:]) {
        self.own = own
        self.rooms = rooms
    }

    /// Parses a `Last-Event-ID`; nil if it is not one this server writes.
    public init?(lastEventID text: String) {
        guard text.utf8.count <= Self.maxTextLength else { return nil }
        let parts = text.split(separator: ";", omittingEmptySubsequences: false)
        guard parts.count >= 2, parts.count - 2 <= Self.maxRooms, parts[0] == Self.version, let own = LogPosition(parts[1]) else {
            return nil
        }
        var rooms: [RoomID: EntryID] = [:]
        for part in parts.dropFirst(2) {
            guard let equals = part.firstIndex(of: "="), let room = RoomID(part[..<equals]),
                let position = EntryID(part[part.index(after: equals)...])
            else { return nil }
            rooms[room] = position
        }
        self.init(own: own, rooms: rooms)
    }

    public var description: String { Self.text(own: own, rooms: rooms.lazy.map { ($0.key, $0.value) }) }

    /// The text of a cursor at these positions, without building one.
    static func text(own: LogPosition, rooms: some Sequence<(RoomID, EntryID)>) -> String {
        var text = Self.version + ";" + own.description
        for (room, position) in rooms {
            text += ";"
            text += room.rawValue
            text += "="
            text += position.description
        }
        return text
    }
}
