import NIOConcurrencyHelpers

/// Sessions whose stream dropped, each waiting out the grace period before the peer leaves its
/// rooms. The client may resume the session on any node meanwhile; the wait then ends in a
/// no-op, since the session belongs to the new stream.
///
/// The waits run as child tasks of `run`, inside the coordinator's task group: when the node
/// stops they are cancelled and awaited with everything else, never left behind.
final class GracePeriods: Sendable {
    private let duration: Duration
    private let pending = NIOLockedValueBox<[String: PeerStream]>([:])
    private let started: AsyncStream<PeerStream>
    private let start: AsyncStream<PeerStream>.Continuation

    init(duration: Duration) {
        self.duration = duration
        (started, start) = AsyncStream.makeStream()
    }

    /// Starts the stream's grace period; `run` ends its session when it is over.
    func wait(for stream: PeerStream) {
        pending.withLockedValue { $0[stream.session] = stream }
        start.yield(stream)
    }

    /// Runs every grace period until the task is cancelled: `expire` ends the session of each
    /// that is over. A cancelled wait leaves its stream pending (see `cancelAll`).
    func run(expire: @escaping @Sendable (PeerStream) async -> Void) async {
        await withDiscardingTaskGroup { group in
            for await stream in started {
                group.addTask {
                    guard (try? await Task.sleep(for: self.duration)) != nil,
                        self.pending.withLockedValue({ $0.removeValue(forKey: stream.session) }) != nil
                    else { return }
                    await expire(stream)
                }
            }
        }
    }

    /// The streams whose sessions are still waiting.
    var streams: [PeerStream] { pending.withLockedValue { Array($0.values) } }

    /// Forgets every wait (the node has stopped); true if there were any.
    func cancelAll() -> Bool {
        pending.withLockedValue { pending in
            defer { pending = [:] }
            return !pending.isEmpty
        }
    }
}
