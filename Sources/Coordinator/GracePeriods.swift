import NIOConcurrencyHelpers

/// Sessions whose stream dropped, each waiting out the grace period before the peer leaves its
/// rooms. The client may resume the session on any node meanwhile; the wait then ends in a
/// no-op, since the session belongs to the new stream.
final class GracePeriods: Sendable {
    private let duration: Duration
    private let pending = NIOLockedValueBox<[String: (stream: PeerStream, wait: Task<Void, Never>)]>([:])

    init(duration: Duration) {
        self.duration = duration
    }

    func wait(for stream: PeerStream, then expire: @escaping @Sendable () async -> Void) {
        pending.withLockedValue { pending in
            let wait = Task {
                guard (try? await Task.sleep(for: duration)) != nil else { return }
                self.pending.withLockedValue { _ = $0.removeValue(forKey: stream.session) }
                await expire()
            }
            pending[stream.session] = (stream, wait)
        }
    }

    /// The streams whose sessions are still waiting.
    var streams: [PeerStream] { pending.withLockedValue { $0.values.map(\.stream) } }

    /// Stops every wait (the node is stopping); true if there were any.
    func cancelAll() -> Bool {
        pending.withLockedValue { pending in
            defer { pending = [:] }
            for entry in pending.values { entry.wait.cancel() }
            return !pending.isEmpty
        }
    }
}
