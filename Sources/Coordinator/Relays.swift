extension Coordinator {
    public enum RelayOutcome: Sendable, Equatable {
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

/// Relays from one peer to another: the sender's rooms, then relay.lua on the target's keys,
/// which checks the two share one and logs and publishes the message atomically.
struct Relays: Sendable {
    let context: NodeContext

    /// Sends `event` with `{"peer": sender, "data": body}` to the peer's stream, if the two
    /// share a room. `body` must be compact JSON text (no newline).
    func relay(from sender: PeerUser, to target: PeerID, event: EventName, body: String) async throws -> Coordinator.RelayOutcome {
        let data = "{\"peer\":\(sender.json),\"data\":\(body)}"
        let senderRooms = (try await context.redis.send(["HKEYS", context.keys.peerRooms(sender.id)]).array ?? []).compactMap(\.string)
        let outcome: Coordinator.RelayOutcome = switch try await context.scripts.run(
            RelayCall(context.keys, target: target, event: event, data: data, senderRooms: senderRooms, log: context.logLimits)
        ) {
        case .noSharedRoom: .notInSharedRoom
        case .noSession: .noSuchPeer
        case .published(receivers: 0): .held
        case .published: .delivered
        }
        context.metrics.relayed("\(outcome)")
        return outcome
    }
}
