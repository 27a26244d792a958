import NIOCore
import Synchronization

/// One event for a peer's stream: an SSE event name and its JSON data, ready to frame.
public struct StreamEvent: Sendable {
    public let name: String
    public let data: ByteBuffer

    public init(name: String, data: ByteBuffer) {
        self.name = name
        self.data = data
    }
}

/// A peer's open event stream on this node. Receives what Redis routes to the peer once Redis
/// has confirmed it as the peer's current stream, and ends when a newer stream replaces it,
/// when its reader falls too far behind, or when the node closes it.
///
/// Its queue is bounded in events and bytes: a reader that stops reading is cut off
/// (`tooSlow`) instead of growing the node's memory. The reader takes everything queued at
/// once (`nextBatch`), so a burst becomes one socket write without delaying a lone event.
public final class PeerStream: Sendable {
    public let user: PeerUser
    /// Unique per stream; Redis records which one is the peer's current stream.
    public let session: String
    private let limits: Limits
    private let onEnd: (@Sendable (EndReason) -> Void)?
    private let state = Mutex(State())

    public struct Limits: Sendable {
        public var maxQueuedEvents: Int
        public var maxQueuedBytes: Int

        public init(maxQueuedEvents: Int = 1024, maxQueuedBytes: Int = 1 << 20) {
            self.maxQueuedEvents = maxQueuedEvents
            self.maxQueuedBytes = maxQueuedBytes
        }
    }

    public enum EndReason: Sendable, Equatable {
        case replaced, tooSlow, closed
    }

    private struct State {
        var confirmed = false
        var ended: EndReason?
        var queue = CircularBuffer<StreamEvent>(initialCapacity: 4)
        var queuedBytes = 0
        var reader: CheckedContinuation<[StreamEvent]?, Never>?

        mutating func takeAll() -> [StreamEvent] {
            defer {
                queue.removeAll(keepingCapacity: true)
                queuedBytes = 0
            }
            return Array(queue)
        }
    }

    init(user: PeerUser, session: String, limits: Limits, onEnd: (@Sendable (EndReason) -> Void)? = nil) {
        self.user = user
        self.session = session
        self.limits = limits
        self.onEnd = onEnd
    }

    /// Why the stream ended, or nil while it is open.
    public var endReason: EndReason? { state.withLock { $0.ended } }

    /// Everything queued, waiting until there is something; nil once the stream has ended.
    /// One reader at a time. Returns nil if the reading task is cancelled.
    public func nextBatch() async -> [StreamEvent]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (reader: CheckedContinuation<[StreamEvent]?, Never>) in
                let ready: [StreamEvent]?? = state.withLock { state in
                    if state.ended != nil || Task.isCancelled { return .some(.none) }
                    if !state.queue.isEmpty { return .some(state.takeAll()) }
                    state.reader = reader
                    return .none
                }
                if let ready { reader.resume(returning: ready) }
            }
        } onCancel: {
            state.withLock { state in
                defer { state.reader = nil }
                return state.reader
            }?.resume(returning: nil)
        }
    }

    /// Redis confirmed this stream as the peer's current one: deliver from now on.
    func confirm() {
        state.withLock { $0.confirmed = true }
    }

    /// Delivers a routed event if Redis has confirmed this stream.
    func deliver(_ event: StreamEvent) {
        enqueue(event, onlyIfConfirmed: true)
    }

    /// Adds an event made by this node (e.g. `ping`), not routed through Redis.
    public func send(_ event: StreamEvent) {
        enqueue(event, onlyIfConfirmed: false)
    }

    private func enqueue(_ event: StreamEvent, onlyIfConfirmed: Bool) {
        let (reader, batch, overflow): (CheckedContinuation<[StreamEvent]?, Never>?, [StreamEvent]?, Bool) = state.withLock { state in
            guard state.ended == nil, state.confirmed || !onlyIfConfirmed else { return (nil, nil, false) }
            if state.queue.count >= limits.maxQueuedEvents || state.queuedBytes + event.data.readableBytes > limits.maxQueuedBytes {
                return (nil, nil, true)
            }
            state.queue.append(event)
            state.queuedBytes += event.data.readableBytes
            guard let reader = state.reader else { return (nil, nil, false) }
            state.reader = nil
            return (reader, state.takeAll(), false)
        }
        if overflow { end(.tooSlow) }
        reader?.resume(returning: batch)
    }

    /// Ends the stream; the reader gets nil. The first reason given sticks.
    public func end(_ reason: EndReason) {
        let (first, reader) = state.withLock { state -> (Bool, CheckedContinuation<[StreamEvent]?, Never>?) in
            guard state.ended == nil else { return (false, nil) }
            state.ended = reason
            state.queue.removeAll()
            state.queuedBytes = 0
            defer { state.reader = nil }
            return (true, state.reader)
        }
        reader?.resume(returning: nil)
        if first { onEnd?(reason) }
    }
}
