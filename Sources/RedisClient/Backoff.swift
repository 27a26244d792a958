import NIOCore

/// Exponential back-off between reconnect attempts: 50 ms doubling to a cap, reset on success.
public struct Backoff: Sendable {
    public var initial: TimeAmount
    public var maximum: TimeAmount
    private var current: TimeAmount

    public init(initial: TimeAmount = .milliseconds(50), maximum: TimeAmount = .seconds(2)) {
        self.initial = initial
        self.maximum = maximum
        self.current = initial
    }

    /// The delay before the next attempt; each call doubles the one after.
    public mutating func next() -> TimeAmount {
        defer { current = min(current * 2, maximum) }
        return current
    }

    public mutating func reset() { current = initial }
}
