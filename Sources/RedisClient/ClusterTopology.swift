/// Which primary serves each hash slot: one shard owning every slot for a single Redis, or a
/// cluster's map as `CLUSTER SLOTS` gave it. A value: a router keeps the current one and
/// replaces it whole when the cluster changes.
public struct ClusterTopology: Sendable, Equatable {
    /// The primaries, each the owner of some slots.
    public let primaries: [RedisEndpoint]
    /// For each of the 16384 slots, its owner's index in `primaries`; -1 if no primary serves it.
    private let owners: [Int16]
    /// The order in which the client adopted its maps: a later one is newer. Maps reach their
    /// users from several tasks; this tells which one is current. Not part of equality.
    public internal(set) var version: UInt64 = 0

    public static func == (a: ClusterTopology, b: ClusterTopology) -> Bool {
        a.primaries == b.primaries && a.owners == b.owners
    }

    /// A single server owning every slot.
    public init(single endpoint: RedisEndpoint) {
        primaries = [endpoint]
        owners = Array(repeating: 0, count: HashSlot.count)
    }

    init(primaries: [RedisEndpoint], owners: [Int16]) {
        self.primaries = primaries
        self.owners = owners
    }

    /// The primary serving `slot`, if any.
    public func owner(ofSlot slot: Int) -> RedisEndpoint? {
        let index = Int(owners[slot])
        return index < 0 ? nil : primaries[index]
    }

    public func owner(of keyOrChannel: String) -> RedisEndpoint? { owner(ofSlot: HashSlot.of(keyOrChannel)) }

    /// The primaries that serve at least one slot (after a `MOVED`, the one that gave a slot up
    /// may serve none and stay listed).
    var servingPrimaries: Set<RedisEndpoint.Address> {
        var serving = Set<Int16>()
        for owner in owners where owner >= 0 { serving.insert(owner) }
        return Set(serving.map { primaries[Int($0)].address })
    }

    /// Whether every slot has a primary (a cluster whose state is ok).
    public var coversEverySlot: Bool { !owners.contains(-1) }

    /// The same map with `slot` served by `primary` (after a `MOVED`).
    func moving(slot: Int, to primary: RedisEndpoint) -> ClusterTopology {
        var primaries = primaries
        let index = primaries.firstIndex(of: primary) ?? { primaries.append(primary); return primaries.count - 1 }()
        var owners = owners
        owners[slot] = Int16(index)
        return ClusterTopology(primaries: primaries, owners: owners)
    }

    public struct InvalidReply: Error, CustomStringConvertible {
        public let reply: String
        public var description: String { "CLUSTER SLOTS gave an unexpected reply: \(reply)" }
    }

    /// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, …], replicas…], …]`. An
    /// empty host means the host of the server asked (`asked`); primaries get `credentials`.
    init(clusterSlots reply: RESPValue, asked: RedisEndpoint, credentials: RedisEndpoint) throws {
        guard let ranges = reply.array else { throw InvalidReply(reply: "\(reply)") }
        var primaries: [RedisEndpoint] = []
        var owners = [Int16](repeating: -1, count: HashSlot.count)
        for range in ranges {
            guard let parts = range.array, parts.count >= 3, let start = parts[0].int, let end = parts[1].int,
                (0..<HashSlot.count).contains(start), (start..<HashSlot.count).contains(end),
                let node = parts[2].array, node.count >= 2, let host = node[0].string, let port = node[1].int
            else { throw InvalidReply(reply: "\(range)") }
            var primary = credentials
            primary.address = .tcp(host: host.isEmpty ? asked.host ?? "127.0.0.1" : host, port: port)
            let index = primaries.firstIndex(of: primary) ?? { primaries.append(primary); return primaries.count - 1 }()
            for slot in start...end { owners[slot] = Int16(index) }
        }
        guard !primaries.isEmpty else { throw InvalidReply(reply: "no slots served") }
        self.init(primaries: primaries, owners: owners)
    }
}

extension RedisEndpoint {
    /// The host of a TCP endpoint.
    var host: String? {
        if case .tcp(let host, _) = address { return host }
        return nil
    }
}

/// A cluster's answer that the command belongs elsewhere or must wait.
enum ClusterRedirection: Equatable {
    /// The slot lives on `target` now: update the map and send there.
    case moved(slot: Int, target: RedisEndpoint.Address)
    /// The slot is migrating and the key may be on `target`: send `ASKING` and the command there, once.
    case ask(slot: Int, target: RedisEndpoint.Address)
    /// The slot is moving or the cluster is down: wait a little and try again.
    case retryLater

    /// Reads an error reply; nil if it is not a redirection. `MOVED 3999 127.0.0.1:6381`, or
    /// with an empty host (`:6381`) meaning the host that answered.
    init?(_ message: String, from server: RedisEndpoint) {
        let words = message.split(separator: " ")
        guard let kind = words.first else { return nil }
        switch kind {
        case "TRYAGAIN", "CLUSTERDOWN":
            self = .retryLater
            return
        case "MOVED", "ASK":
            break
        default:
            return nil
        }
        guard words.count >= 3, let slot = Int(words[1]), let colon = words[2].lastIndex(of: ":"),
            let port = Int(words[2][words[2].index(after: colon)...])
        else { return nil }
        let host = words[2][..<colon]
        let target = RedisEndpoint.Address.tcp(host: host.isEmpty ? server.host ?? "127.0.0.1" : String(host), port: port)
        self = kind == "MOVED" ? .moved(slot: slot, target: target) : .ask(slot: slot, target: target)
    }
}
