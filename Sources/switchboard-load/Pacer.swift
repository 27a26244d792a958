/// Paces a sender's requests to a fixed rate, or not at all (closed loop, at rate 0). At a
/// fixed rate a request is stamped with the time it *should* go, so a stall counts against
/// latency.
struct Pacer: Sendable {
    let start: UInt64
    /// Nanoseconds between one sender's requests; 0 for a closed loop.
    let interval: Double

    /// `rate`: requests per second over all `senders`.
    init(start: UInt64, rate: Double, senders: Int) {
        self.start = start
        interval = rate > 0 ? 1e9 / (rate / Double(senders)) : 0
    }

    /// When a sender's request number `count` is due (now, in a closed loop). `offset`, a
    /// fraction of one interval, staggers the senders.
    func dueTime(_ count: Int, offset: Double = 0) -> UInt64 {
        interval > 0 ? start + UInt64((Double(count) + offset) * interval) : monotonicNanoseconds()
    }

    /// Waits until a sender's request number `count` is due and returns when that was.
    func due(_ count: Int, offset: Double = 0) async throws -> UInt64 {
        let due = dueTime(count, offset: offset)
        let now = monotonicNanoseconds()
        if due > now { try await Task.sleep(for: .nanoseconds(Int(due - now))) }
        return due
    }
}
