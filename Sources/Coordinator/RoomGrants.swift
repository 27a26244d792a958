/// The rooms a peer's token lets it be in: its `rooms` claim. An entry is a room id, a prefix
/// ending in `*` (`"team-42-*"`, the part before the `*` a valid room id), or `"*"` alone for
/// every room. A token without the claim grants every room; an empty claim grants none.
public struct RoomGrants: Sendable, Hashable {
    /// The claim as the token carried it (nil: no claim), for a renewed token to carry again.
    public let claim: [String]?
    private let rooms: Set<RoomID>
    private let prefixes: [String]
    private let everyRoom: Bool

    /// Every room: a token without a `rooms` claim.
    public static let all = RoomGrants(claim: nil, rooms: [], prefixes: [], everyRoom: true)

    private init(claim: [String]?, rooms: Set<RoomID>, prefixes: [String], everyRoom: Bool) {
        (self.claim, self.rooms, self.prefixes, self.everyRoom) = (claim, rooms, prefixes, everyRoom)
    }

    /// The grants of a `rooms` claim; nil if an entry breaks the rule.
    public init?(claim: [String]) {
        var (rooms, prefixes, everyRoom) = (Set<RoomID>(), [String](), false)
        for entry in claim {
            if entry == "*" {
                everyRoom = true
            } else if entry.hasSuffix("*") {
                let prefix = entry.dropLast()
                guard RoomID(prefix) != nil else { return nil }
                prefixes.append(String(prefix))
            } else {
                guard let room = RoomID(entry) else { return nil }
                rooms.insert(room)
            }
        }
        self.init(claim: claim, rooms: rooms, prefixes: prefixes, everyRoom: everyRoom)
    }

    public func allows(_ room: RoomID) -> Bool {
        everyRoom || rooms.contains(room) || prefixes.contains { room.rawValue.hasPrefix($0) }
    }
}
