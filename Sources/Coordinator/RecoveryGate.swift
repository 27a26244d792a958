import NIOConcurrencyHelpers
import RedisClient

/// Whether a membership change may go ahead now, after Redis may have lost its data: the
/// epoch this node knows, the recovery window the nodes open when one notices a loss (every
/// other node notices within a heartbeat and puts back what it holds), and this node's own
/// putting back. The one owner of the rule "no join, leave or session end sees a room only
/// partly put back".
final class RecoveryGate: Sendable {
    private let context: NodeContext
    /// How long membership changes wait after a node notices a loss: 1.5 heartbeats.
    let recoveryWindow: Duration
    /// The `epoch` value Redis held when this node last looked (see `observe`).
    private let epoch = NIOLockedValueBox<String?>(nil)
    let reassertions = Reassertions()
    /// Requests to compare Redis's epoch with the known one now, rather than at the next heartbeat.
    let epochCheck = CoalescedRequests()

    init(context: NodeContext, heartbeatInterval: Duration) {
        self.context = context
        self.recoveryWindow = heartbeatInterval * 3 / 2
    }

    var knownEpoch: String? { epoch.withLockedValue { $0 } }

    /// How long a join or leave waits through a Redis outage (a reconnect in progress) or the
    /// recovery window before it is refused with 503: a client that joins once, on `connected`,
    /// is never refused for a loss the nodes are already putting right.
    /// (The window, a reconnect back-off of up to 2 s, and a margin.)
    var membershipWait: Duration { recoveryWindow + .seconds(5) }

    /// Commands whose replies `refuseWhileRecovering(_:knownEpoch:)` reads, to send along with
    /// others in one round trip.
    var checks: [[String]] { [["PTTL", context.keys.recovering], ["GET", context.keys.epoch]] }

    /// Throws "unavailable" while the nodes put back what they hold after Redis lost its data:
    /// the recovery window is open, or Redis holds another epoch than `knownEpoch` (read before
    /// the checks were sent), a loss no node may have acted on yet. This node then starts the
    /// recovery, and the caller waits for the window it opens.
    func refuseWhileRecovering(_ replies: ArraySlice<RESPValue>, knownEpoch: String?) throws {
        let (window, current) = (replies[replies.startIndex], replies[replies.startIndex + 1])
        if let knownEpoch, current.string != knownEpoch {
            epochCheck.trigger()
            throw RedisConnectionError.unavailable(retryAfterMilliseconds: 100)
        }
        // This node is still putting things back (the window may run out before it is done).
        if reassertions.isRunning { throw RedisConnectionError.unavailable(retryAfterMilliseconds: 100) }
        if let remaining = window.int, remaining > 0 {
            throw RedisConnectionError.unavailable(retryAfterMilliseconds: remaining)
        }
    }

    func refuseWhileRecovering() async throws {
        let known = knownEpoch
        try refuseWhileRecovering(try await context.redis.pipeline(checks)[...], knownEpoch: known)
    }

    /// Throws if Redis holds another epoch than the known one: it lost its data and the
    /// sessions are put back first (a clean-up that found no session must then run again).
    func refuseIfDataWasLost() async throws {
        let known = knownEpoch
        let current = try await context.redis.send(["GET", context.keys.epoch]).string
        if let known, current != known { throw RedisLostItsData() }
    }

    private struct RedisLostItsData: Error, CustomStringConvertible {
        var description: String { "Redis lost its data; the session is put back first" }
    }

    /// Compares the epoch Redis holds with the one this node knew. Another one means Redis lost
    /// its data: this opens the recovery window (every node notices within one heartbeat, and
    /// membership changes wait until all have put back what they hold), then takes the new
    /// epoch as known, and returns the epoch that was lost: the caller puts back what the node
    /// holds, then calls `recovered(lostEpoch:succeeded:)`.
    ///
    /// The window opens before the new epoch is known: a join that read the new epoch and saw no
    /// window must have read it before this node knew it, and then waits (see
    /// `refuseWhileRecovering`). Of two calls that see the same change, one gets the lost epoch.
    func observe(_ current: String) async -> String? {
        let known = epoch.withLockedValue { known in
            defer { if known == nil { known = current } }
            return known
        }
        guard let known, known != current else { return nil }
        // If Redis is gone again, the next heartbeat sees the change again.
        guard (try? await openWindow()) != nil else { return nil }
        let first = epoch.withLockedValue { epoch in
            guard epoch == known else { return false }
            epoch = current
            return true
        }
        return first ? known : nil
    }

    /// Putting back is over. It may have taken a while: the other nodes' joins wait a window
    /// from now. If it failed, the lost epoch is taken as known again, so that the next
    /// heartbeat sees the change and tries again.
    func recovered(lostEpoch: String, succeeded: Bool) async {
        guard succeeded else { return epoch.withLockedValue { $0 = lostEpoch } }
        _ = try? await openWindow()
    }

    /// Opens the recovery window: membership changes on every node wait 1.5 heartbeats.
    func openWindow() async throws {
        try await context.redis.send(["SET", context.keys.recovering, context.nodeID, "PX", String(recoveryWindow.inMilliseconds)])
    }
}
