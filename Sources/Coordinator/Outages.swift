import RedisClient

extension RedisConnectionError {
    /// How long to wait before trying Redis again: the client's back-off when it gave one (also
    /// what remains of the recovery window after Redis lost its data), else a short pause.
    public var retryDelay: Duration {
        switch self {
        case .unavailable(let milliseconds): .milliseconds(max(milliseconds, 10))
        default: .milliseconds(100)
        }
    }
}

/// Waiting out a brief Redis outage instead of refusing: a reconnect in progress, a server
/// still loading its data or failing over, or the recovery window after Redis lost its data
/// usually ends within seconds.
public enum Outage {
    /// Runs `operation` until it succeeds, fails for a reason other than Redis being
    /// unavailable, or `deadline` has passed (the last try is at about the deadline): then the
    /// last error stands, as a `RedisConnectionError` (a transient refusal such as `LOADING`
    /// becomes `.unavailable`). Between tries it calls `pause` with the delay the error
    /// suggests (a sleep by default; a caller may also keep a stream alive meanwhile).
    public static func retrying<T>(
        until deadline: ContinuousClock.Instant,
        _ operation: () async throws -> T,
        pause: (Duration) async throws -> Void = { try await Task.sleep(for: $0) }
    ) async throws -> T {
        while true {
            let failure: RedisConnectionError
            do {
                return try await operation()
            } catch let error as RedisConnectionError {
                failure = error
            } catch let error as RedisServerError where error.isTransient {
                failure = .unavailable(retryAfterMilliseconds: 250)
            }
            let remaining = deadline - .now
            guard remaining > .zero else { throw failure }
            try await pause(min(failure.retryDelay, remaining))
        }
    }
}
