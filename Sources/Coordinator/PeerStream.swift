import NIOConcurrencyHelpers
import NIOCore

/// One event for a peer's stream, ready to frame: SSE id, event name and JSON data.
public struct StreamEvent: Sendable {
    public let name: String
    public let data: ByteBuffer
    /// The stream's `EventCursor` text once this event is delivered; empty until queued.
    public var id: String

    public init(name: String, data: ByteBuffer) {
        self.name = name
        self.data = data
        self.id = ""
    }
}

/// A message routed to a peer from one of its event logs: the room's log (`source`) or, with
/// no source, its own (relays). `!joined` and `!left` are control messages: the peer joined or
/// left the room, which enters or leaves its cursor.
struct RoutedEvent: Sendable {
    let name: String
    let source: RoomID?
    let position: LogPosition
    let data: ByteBuffer

    static let joined = "!joined"
    static let left = "!left"
}

/// A peer's open event stream on this node. Receives what Redis routes to the peer once Redis
/// has confirmed it as the peer's current stream, and ends when a newer stream replaces it,
/// when its reader falls too far behind, or when the node closes it.
///
/// It starts held: routed events wait until the node has read back from the event logs what
/// a resuming client missed, then `start` queues `connected`, the missed events and the held
/// ones, each once (the cursor drops anything at or before a position already delivered).
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
    private let state: NIOLockedValueBox<State>

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

    private typealias Reader = CheckedContinuation<[StreamEvent]?, Never>

    private struct State {
        var confirmed = false
        /// `connected` is queued: the stream is past its start.
        var started = false
        var holding = true
        var held: [RoutedEvent] = []
        var cursor: EventCursor
        var ended: EndReason?
        var queue = CircularBuffer<StreamEvent>(initialCapacity: 4)
        var queuedBytes = 0
        /// Bytes of the last batch taken, until the reader says they are written: they count
        /// against the limit too, so a stuck write cannot double what a stream holds.
        var unwrittenBytes = 0
        var reader: Reader?

        mutating func takeAll() -> [StreamEvent] {
            defer {
                queue.removeAll(keepingCapacity: true)
                unwrittenBytes = queuedBytes
                queuedBytes = 0
            }
            return Array(queue)
        }

        /// Queues the event with the cursor as its id; false if the queue is full.
        mutating func append(_ event: StreamEvent, limits: Limits) -> Bool {
            if queue.count >= limits.maxQueuedEvents || unwrittenBytes + queuedBytes + event.data.readableBytes > limits.maxQueuedBytes {
                return false
            }
            var event = event
            event.id = cursor.description
            queue.append(event)
            queuedBytes += event.data.readableBytes
            return true
        }

        /// Moves the cursor and queues a routed event, unless it was delivered before.
        mutating func append(_ routed: RoutedEvent, limits: Limits) -> Bool {
            switch (routed.name, routed.source) {
            case (RoutedEvent.joined, let room?):
                if cursor.rooms[room] == nil { cursor.rooms[room] = routed.position }
                return true
            case (RoutedEvent.left, let room?):
                cursor.rooms[room] = nil
                return true
            default:
                break
            }
            guard cursor.advance(routed.source, to: routed.position) else { return true }
            return append(StreamEvent(name: routed.name, data: routed.data), limits: limits)
        }
    }

    init(user: PeerUser, session: String, limits: Limits, cursor: EventCursor, onEnd: (@Sendable (EndReason) -> Void)? = nil) {
        self.user = user
        self.session = session
        self.limits = limits
        self.onEnd = onEnd
        self.state = NIOLockedValueBox(State(cursor: cursor))
    }

    /// Why the stream ended, or nil while it is open.
    public var endReason: EndReason? { state.withLockedValue { $0.ended } }

    /// The id of the last event queued: where a client that reconnects now resumes.
    public var eventID: String { state.withLockedValue { $0.cursor.description } }

    /// The rooms the peer is in, as far as the events routed to this stream tell.
    public var rooms: Set<RoomID> { state.withLockedValue { Set($0.cursor.rooms.keys) } }

    /// The reader wrote the last batch out: its bytes no longer count against the limit.
    public func written() {
        state.withLockedValue { $0.unwrittenBytes = 0 }
    }

    /// Everything queued, waiting until there is something; nil once the stream has ended.
    /// One reader at a time (which calls `written()` once the batch is out). Returns nil if
    /// the reading task is cancelled.
    public func nextBatch() async -> [StreamEvent]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (reader: Reader) in
                let ready: [StreamEvent]?? = state.withLockedValue { state in
                    if state.ended != nil || Task.isCancelled { return .some(.none) }
                    if !state.queue.isEmpty { return .some(state.takeAll()) }
                    state.reader = reader
                    return .none
                }
                if let ready { reader.resume(returning: ready) }
            }
        } onCancel: {
            state.withLockedValue { state in
                defer { state.reader = nil }
                return state.reader
            }?.resume(returning: nil)
        }
    }

    /// Redis confirmed this stream as the peer's current one: deliver from now on.
    func confirm() {
        state.withLockedValue { $0.confirmed = true }
    }

    /// Holds routed events until `start`: the node's subscription was lost, and what was sent
    /// meanwhile must come from the logs first.
    func hold() {
        state.withLockedValue { if $0.started { $0.holding = true } }
    }

    /// Whether `connected` was queued (a stream still starting reads its logs by itself).
    var isStarted: Bool { state.withLockedValue { $0.started } }

    /// Where the stream is in each log.
    var cursor: EventCursor { state.withLockedValue { $0.cursor } }

    /// Queues `connected` if given (with the cursor before the replay as its id), then `replay`
    /// (read from the logs, so it continues the cursor without a gap); then, if the
    /// subscription is still the one the replay was read under (`stillLive`, asked under the
    /// stream's lock), what was held meanwhile, and lets events through.
    ///
    /// If the subscription was lost again meanwhile, the stream keeps holding: what arrives live
    /// from then on may follow a gap that only the logs can fill, and the next catch-up reads
    /// on from where this replay ends. Returns whether the stream let events through.
    /// - Parameters:
    ///   - cursor: replaces the cursor first (a fresh session: nothing held belongs to it).
    ///   - rooms: if given, the rooms the peer is in: others leave the cursor.
    @discardableResult
    func start(
        connected: StreamEvent?, replay: [RoutedEvent], cursor: EventCursor? = nil, rooms: Set<RoomID>? = nil,
        stillLive: () -> Bool
    ) -> Bool {
        var released = false
        update { state in
            if let cursor {
                state.cursor = cursor
                state.held = []
            }
            if let rooms { state.cursor.rooms = state.cursor.rooms.filter { rooms.contains($0.key) } }
            if let connected {
                state.started = true
                guard state.append(connected, limits: limits) else { return false }
            }
            for event in replay {
                guard state.append(event, limits: limits) else { return false }
            }
            guard stillLive() else { return true }
            defer {
                state.held = []
                state.holding = false
            }
            released = true
            for event in state.held {
                guard state.append(event, limits: limits) else { return false }
            }
            return true
        }
        return released
    }

    /// Delivers a routed event if Redis has confirmed this stream.
    func deliver(_ event: RoutedEvent) {
        update { state in
            guard state.confirmed else { return true }
            guard state.holding else { return state.append(event, limits: limits) }
            state.held.append(event)
            return state.held.count <= limits.maxQueuedEvents
        }
    }

    /// Adds an event made by this node (e.g. `ping`), not routed through Redis. Dropped while
    /// the stream is held.
    public func send(_ event: StreamEvent) {
        update { state in state.holding || state.append(event, limits: limits) }
    }

    /// Applies `change` to an open stream; then wakes the reader with everything queued, or,
    /// if `change` found the queue full, ends the stream as too slow.
    private func update(_ change: (inout State) -> Bool) {
        let (fits, wake) = state.withLockedValue { state -> (Bool, (reader: Reader, batch: [StreamEvent])?) in
            guard state.ended == nil else { return (true, nil) }
            guard change(&state) else { return (false, nil) }
            guard let reader = state.reader, !state.queue.isEmpty else { return (true, nil) }
            state.reader = nil
            return (true, (reader, state.takeAll()))
        }
        if !fits { end(.tooSlow) }
        if let wake { wake.reader.resume(returning: wake.batch) }
    }

    /// Ends the stream; the reader gets nil. The first reason given sticks.
    public func end(_ reason: EndReason) {
        let (first, reader) = state.withLockedValue { state -> (Bool, Reader?) in
            guard state.ended == nil else { return (false, nil) }
            state.ended = reason
            state.queue.removeAll()
            state.queuedBytes = 0
            state.held = []
            defer { state.reader = nil }
            return (true, state.reader)
        }
        reader?.resume(returning: nil)
        if first { onEnd?(reason) }
    }
}
