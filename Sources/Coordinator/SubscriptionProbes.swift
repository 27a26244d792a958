import NIOConcurrencyHelpers
import NIOCore
import RedisClient

/// The probes a node publishes to itself, on one channel in a slot of each primary, so that a
/// subscription that died behind a live connection is noticed on whichever shard it happens:
/// each channel's probes sent, and the last one back.
final class SubscriptionProbes: Sendable {
    typealias Shard = RedisSubscriber.Shard

    private let keys: KeySpace
    private let nodeID: String
    /// The start of every probe channel's name: most messages are ruled out on it at once.
    private let commonPrefix: [UInt8]

    private struct Probe {
        var sent: UInt64 = 0
        var received: UInt64 = 0
        var subscribed = false
    }

    private struct State {
        var probes: [String: Probe] = [:]
        /// The channels chosen for the map of this version.
        var chosen: (version: UInt64, channels: [Shard: String])?
    }

    private let state = NIOLockedValueBox(State())

    init(keys: KeySpace, nodeID: String) {
        self.keys = keys
        self.nodeID = nodeID
        commonPrefix = Array(keys.nodeProbePrefix(nodeID).utf8)
    }

    /// A probe channel in a slot of each primary of `topology` (the first variant that lands
    /// there: the same names as long as the map stays the same).
    func channels(for topology: ClusterTopology) -> [Shard: String] {
        if let chosen = state.withLockedValue({ $0.chosen }), chosen.version == topology.version, !chosen.channels.isEmpty {
            return chosen.channels
        }
        var channels: [Shard: String] = [:]
        let primaries = Set(topology.primaries.map(\.address))
        // A primary with a single slot takes about 16,384 tries; none is given up on before.
        for variant in 0..<200_000 where channels.count < primaries.count {
            let channel = keys.nodeProbe(nodeID, variant: variant)
            if let owner = topology.owner(of: channel)?.address, channels[owner] == nil { channels[owner] = channel }
        }
        state.withLockedValue { $0.chosen = (topology.version, channels) }
        return channels
    }

    /// If `message` is one of this node's probes, counts it back and returns true.
    func received(_ message: PubSubMessage) -> Bool {
        guard message.channel.utf8.starts(with: commonPrefix), let number = UInt64(String(buffer: message.payload)) else { return false }
        state.withLockedValue { state in
            guard var probe = state.probes[message.channel] else { return }
            probe.received = max(probe.received, number)
            state.probes[message.channel] = probe
        }
        return true
    }

    func isSubscribed(_ channel: String) -> Bool { state.withLockedValue { $0.probes[channel]?.subscribed ?? false } }

    func subscribed(_ channel: String) { state.withLockedValue { $0.probes[channel, default: Probe()].subscribed = true } }

    /// Forgets the probe channels not in `wanted` (their primary left the map), and returns
    /// those that were subscribed, to unsubscribe.
    func forget(allBut wanted: Set<String>) -> [String] {
        state.withLockedValue { state in
            let gone = state.probes.filter { !wanted.contains($0.key) }
            for name in gone.keys { state.probes[name] = nil }
            return gone.filter(\.value.subscribed).map(\.key)
        }
    }

    /// Counts a new probe on `channel` and returns its number, and whether the one before it
    /// had not come back.
    func next(on channel: String) -> (number: UInt64, previousLost: Bool) {
        state.withLockedValue { state in
            var probe = state.probes[channel, default: Probe()]
            let lost = probe.received < probe.sent
            probe.sent += 1
            state.probes[channel] = probe
            return (probe.sent, lost)
        }
    }

    /// Forgets the probes in flight on `channel` (its connection is being replaced).
    func reset(_ channel: String) {
        state.withLockedValue { state in
            guard var probe = state.probes[channel] else { return }
            probe.received = probe.sent
            state.probes[channel] = probe
        }
    }
}
