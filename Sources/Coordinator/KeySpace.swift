/// Names of every Redis key and channel Switchboard uses. Room keys carry the room id as a
/// hash tag and peer keys the peer id, so all keys of one script call share a cluster slot.
public struct KeySpace: Sendable {
    /// Put before every key and channel name, `sb:` by default.
    public let prefix: String

    public struct InvalidPrefix: Error, CustomStringConvertible {
        public let prefix: String
        public var description: String {
            "invalid key prefix '\(prefix)': use up to 32 characters of A-Z a-z 0-9 - _ . ~ : (no braces, no spaces)"
        }
    }

    public init(prefix: String = "sb:") throws {
        let allowed = prefix.utf8.allSatisfy { $0 == UInt8(ascii: ":") || IdentifierRules.isAllowed($0) }
        guard prefix.utf8.count <= 32, allowed else { throw InvalidPrefix(prefix: prefix) }
        self.prefix = prefix
    }

    /// Hash: the peer's current stream (`session`, `node`, `user`).
    public func peer(_ id: PeerID) -> String { "\(prefix)peer:{\(id)}" }
    /// Hash: the rooms the peer is in, room id → the entry id of its join in the room's log
    /// (a resuming stream reads no room log from earlier than its join).
    public func peerRooms(_ id: PeerID) -> String { "\(prefix)peer:{\(id)}:rooms" }
    /// Stream: what was sent to the peer alone (relays, its introductions to a room it joined,
    /// its farewells from one it left), for resume.
    public func peerLog(_ id: PeerID) -> String { "\(prefix)peer:{\(id)}:log" }
    /// Hash: member peer id → member's user JSON.
    public func roomMembers(_ id: RoomID) -> String { "\(prefix)room:{\(id)}:members" }
    /// Hash: member peer id → the entry id of its join in the room's log (a repeated join
    /// gets its introductions as of it).
    public func roomJoins(_ id: RoomID) -> String { "\(prefix)room:{\(id)}:joins" }
    /// Stream: the room's joins and leaves, one entry each, for resume and for the catch-up
    /// of a stream that just joined.
    public func roomLog(_ id: RoomID) -> String { "\(prefix)room:{\(id)}:log" }

    /// String: a node's heartbeat record (JSON), expiring unless renewed. Pass `*` for a pattern.
    public func node(_ id: String) -> String { "\(prefix)node:{\(id)}" }
    /// Set: the streams a node holds, as `"<peer id> <session>"`, for cleaning up after it dies.
    public func nodeStreams(_ id: String) -> String { "\(prefix)node:{\(id)}:streams" }
    /// String: which node is cleaning up after a dead node (so only one does).
    public func nodeReaper(_ id: String) -> String { "\(prefix)node:{\(id)}:reaper" }

    /// String: a random id made when Redis holds none. If it changes, Redis lost its data and
    /// every node puts back the sessions and memberships it holds. In one slot with
    /// `recovering`, so that a join's check of both visits one server of a cluster.
    public var epoch: String { "\(prefix){fleet}:epoch" }
    /// String, expiring: set while the nodes put back what they hold after Redis lost its
    /// data. Joins, leaves and session ends wait (503) until it expires, so none of them sees a
    /// room only partly put back.
    public var recovering: String { "\(prefix){fleet}:recovering" }
    /// Sharded pub/sub: a node's own channels, on which it checks that its subscription is
    /// alive: `sb:node:{N~V}:probe`, one variant `V` in a slot of each primary.
    public func nodeProbe(_ id: String, variant: Int) -> String { "\(nodeProbePrefix(id))\(variant)}:probe" }
    /// What every probe channel of the node starts with.
    public func nodeProbePrefix(_ id: String) -> String { "\(prefix)node:{\(id)~" }

    /// Sharded pub/sub: everything addressed to one peer, `sb:peer:{P}:events`, in the slot of
    /// the peer's keys; only the node holding its stream listens.
    public func channel(_ id: PeerID) -> String { "\(prefix)peer:{\(id)\(Self.channelEnd)" }
    /// Sharded pub/sub: a room's joins and leaves, `sb:room:{R}:events`, in the slot of the
    /// room's keys; every node holding a stream of a member listens.
    public func channel(_ id: RoomID) -> String { "\(prefix)room:{\(id)\(Self.channelEnd)" }

    /// What follows the id in every channel's name: the end of its hash tag, then `:events`.
    private static let channelEnd = "}:events"

    /// Whose channel this is: a peer's or a room's.
    public enum ChannelOwner: Sendable, Equatable {
        case peer(PeerID)
        case room(RoomID)
    }

    public func owner(ofChannel channel: String) -> ChannelOwner? {
        guard channel.hasPrefix(prefix), channel.hasSuffix(Self.channelEnd) else { return nil }
        let name = channel.utf8.dropFirst(prefix.utf8.count).dropLast(Self.channelEnd.utf8.count)
        if name.starts(with: "peer:{".utf8) { return PeerID(Substring(name.dropFirst(6))).map(ChannelOwner.peer) }
        if name.starts(with: "room:{".utf8) { return RoomID(Substring(name.dropFirst(6))).map(ChannelOwner.room) }
        return nil
    }
}
