import Coordinator
import Foundation
import NIOConcurrencyHelpers

/// Token buckets per peer, on this node: `rate` requests a second on average, bursts of up to
/// `burst`. A peer spreading requests over N nodes gets up to N times the rate; the limit is
/// there to stop a runaway client, not to meter a fair share.
final class RateLimiter: Sendable {
    let rate: Double
    let burst: Double
    private let buckets = NIOLockedValueBox<[PeerID: (tokens: Double, updated: ContinuousClock.Instant)]>([:])

    /// `rate` 0 turns the limit off.
    init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = max(burst, 1)
    }

    /// Takes a token for `peer`; nil if allowed, else how long until one is available.
    func take(for peer: PeerID, now: ContinuousClock.Instant = .now) -> Duration? {
        guard rate > 0 else { return nil }
        return buckets.withLockedValue { buckets in
            if buckets.count > 100_000 { buckets.removeAll(keepingCapacity: true) }  // forget idle peers
            var bucket = buckets[peer] ?? (burst, now)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated).inSeconds * rate)
            bucket.updated = now
            defer { buckets[peer] = bucket }
            if bucket.tokens >= 1 {
                bucket.tokens -= 1
                return nil
            }
            return .milliseconds(Int(((1 - bucket.tokens) / rate * 1000).rounded(.up)))
        }
    }
}
