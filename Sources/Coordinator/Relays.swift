extension Coordinator {
    /// Its raw value names it in the relays counter (interpolating a case reflects on it, at a
    /// cost that showed in a relay's profile).
    public enum RelayOutcome: String, Sendable, Equatable {
        case delivered
        /// The peer has no open stream (never connected, or gone).
        case noSuchPeer
        /// The peer shares no room with the sender.
        case notInSharedRoom
        /// The peer has a session but no stream right now (it dropped and may resume, or its
        /// node died): the message waits in its event log.
        case held
    }
}

/// Relays from one peer to another: relay.lua on the target's keys checks the two share a room
/// and logs and publishes the message atomically. On a single Redis it reads the sender's rooms
/// itself (one round trip); on a cluster they are in another slot, so the node reads them first.
struct Relays: Sendable {
    let context: NodeContext

    /// Sends `event` with `{"peer": sender, "data": body}` to the peer's stream, if the two
    /// share a room. `body` must be compact JSON text (no newline).
    func relay(from sender: PeerUser, to target: PeerID, event: EventName, body: String) async throws -> Coordinator.RelayOutcome {
        let data = "{\"peer\":\(sender.json),\"data\":\(body)}"
        let senderRooms: RelayCall.SenderRooms = context.redis.isCluster
            ? .given((try await context.redis.send(["HKEYS", context.keys.peerRooms(sender.id)]).array ?? []).compactMap(\.string))
            : .read(of: sender.id)
        let outcome: Coordinator.RelayOutcome = switch try await context.scripts.run(
            RelayCall(context.keys, target: target, event: event, data: data, senderRooms: senderRooms, log: context.logLimits)
        ) {
        case .noSharedRoom: .notInSharedRoom
        case .noSession: .noSuchPeer
        case .published(receivers: 0): .held
        case .published: .delivered
        }
        context.metrics.relayed(outcome.rawValue)
        return outcome
    }
}
