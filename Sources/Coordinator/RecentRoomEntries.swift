import NIOCore

/// The latest entries of one room's log as they came on the room's channel, in an unbroken run
/// of the node's subscription: a stream that joins the room catches up from here, with no read
/// of the log, when the join's own entry is among them.
///
/// Why that is enough: a script writes a room's entry and publishes it in one step, so the
/// channel carries the log's entries in the log's order, and a subscription delivers every
/// entry published after Redis confirmed it. If the join's entry came in the run, so did every
/// later one, up to the last routed. If it did not (the node began listening only for this
/// join, or the run broke since), the stream reads the log as before.
///
/// A run breaks when the subscription does (the connection was lost, or a message came from
/// an earlier subscription of the channel, before Redis confirmed the current one). It keeps
/// a few entries, and only for a little while: the joiner's introductions come a round trip
/// after its join's entry.
struct RecentRoomEntries {
    static let capacity = 8
    static let maxAge = TimeAmount.seconds(2)

    private var entries = CircularBuffer<(item: Inbound, received: NIODeadline)>(initialCapacity: 1)

    /// Adds an entry that came on the channel; `unbroken` says the subscription it came on is
    /// the one Redis confirmed last. (Out of order would mean a broken run too.)
    mutating func record(_ item: Inbound, unbroken: Bool, at now: NIODeadline = .now()) {
        guard unbroken, entries.last.map({ $0.item.entry < item.entry }) ?? true else { return forget() }
        if entries.count == Self.capacity { entries.removeFirst() }
        entries.append((item, now))
        prune(now: now)
    }

    /// The run broke: what it held no longer shows that nothing is missing.
    mutating func forget() {
        entries.removeAll(keepingCapacity: false)
    }

    /// Drops the entries older than `maxAge` (a quiet room holds nothing for long).
    mutating func prune(now: NIODeadline = .now()) {
        while let first = entries.first, now - first.received > Self.maxAge { entries.removeFirst() }
        if entries.isEmpty { forget() }
    }

    /// The entries after `anchor`, if `anchor` itself is in the run; else nil.
    func entries(after anchor: EntryID) -> [Inbound]? {
        guard let index = entries.firstIndex(where: { $0.item.entry == anchor }) else { return nil }
        return entries[entries.index(after: index)...].map(\.item)
    }
}
