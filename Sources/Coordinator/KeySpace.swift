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
    /// Set: the rooms the peer is in.
    public func peerRooms(_ id: PeerID) -> String { "\(prefix)peer:{\(id)}:rooms" }
    /// Stream: the events sent to the peer that come from no room (relays), for resume.
    public func peerLog(_ id: PeerID) -> String { "\(prefix)peer:{\(id)}:log" }
    /// Hash: member peer id → member's user JSON.
    public func roomMembers(_ id: RoomID) -> String { "\(prefix)room:{\(id)}:members" }
    /// Stream: the room's membership events, with who was told what, for resume.
    public func roomLog(_ id: RoomID) -> String { "\(prefix)room:{\(id)}:log" }

    /// String: a node's heartbeat record (JSON), expiring unless renewed. Pass `*` for a pattern.
    public func node(_ id: String) -> String { "\(prefix)node:{\(id)}" }
    /// Set: the streams a node holds, as `"<peer id> <session>"`, for cleaning up after it dies.
    public func nodeStreams(_ id: String) -> String { "\(prefix)node:{\(id)}:streams" }
    /// String: which node is cleaning up after a dead node (so only one does).
    public func nodeReaper(_ id: String) -> String { "\(prefix)node:{\(id)}:reaper" }

    /// String: a random id made when Redis holds none. If it changes, Redis lost its data and
    /// every node puts back the sessions and memberships it holds.
    public var epoch: String { "\(prefix)epoch" }
    /// String, expiring: set while the nodes put back what they hold after Redis lost its
    /// data. Joins, leaves and session ends wait (503) until it expires, so none of them sees a
    /// room only partly put back.
    public var recovering: String { "\(prefix)recovering" }
    /// Sharded pub/sub: a node's own channel, on which it checks that its subscription is alive.
    public func nodeProbe(_ id: String) -> String { "\(prefix)node:{\(id)}:probe" }

    /// Sharded pub/sub: everything addressed to one peer, `sb:peer:{P}:events`, in the slot of
    /// the peer's keys; only the node holding its stream listens. Scripts that tell several
    /// peers build each channel from `channelPrefix` and `channelSuffix` (Lua/include/names.lua).
    public func channel(_ id: PeerID) -> String { channelPrefix + id.rawValue + Self.channelSuffix }
    public var channelPrefix: String { "\(prefix)peer:{" }
    public static let channelSuffix = "}:events"

    /// The peer a channel of `channel(_:)` belongs to.
    public func peer(onChannel channel: String) -> PeerID? {
        guard channel.hasPrefix(channelPrefix), channel.hasSuffix(Self.channelSuffix) else { return nil }
        return PeerID(channel.dropFirst(channelPrefix.count).dropLast(Self.channelSuffix.count))
    }
}
