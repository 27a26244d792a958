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

/// A log entry for a stream, live from a channel or read back from its log: from the peer's
/// own log or from the log of a room.
struct Inbound: Sendable {
    enum Source: Sendable, Hashable {
        case own
        case room(RoomID)
    }

    let source: Source
    let entry: EntryID
    let message: LogMessage
}

/// What a stream asks of its node when it starts or stops following a room (`LocalStreams`).
protocol RoomFeedObserver: Sendable {
    /// The stream now follows `room`'s channel. Called under the stream's lock, so that calls
    /// for one stream keep their order.
    func stream(_ stream: PeerStream, follows room: RoomID)
    /// The stream no longer follows `room`. Called under the stream's lock.
    func stream(_ stream: PeerStream, unfollows room: RoomID)
    /// The stream joined `room` at its entry `position`: hand it what the room logged after it
    /// (`caughtUp(in:from:with:)`), from the channel's recent entries or from the log once the
    /// room's channel is confirmed.
    func stream(_ stream: PeerStream, catchesUpIn room: RoomID, after position: EntryID)
}

/// A peer's open event stream on this node. Receives what Redis routes to the peer once Redis
/// has confirmed it as the peer's current stream, and ends when a newer stream replaces it,
/// when its reader falls too far behind, or when the node closes it.
///
/// It turns log entries into SSE events in the order the guarantees need. Its cursor holds,
/// for its own log and for each room it follows, the last entry delivered: an entry at or
/// before it was delivered before and is dropped, so whatever mix of live messages and log
/// reads brings an entry, it is delivered once. Within a room, events come in the room log's
/// order, from the position the peer's introductions are as of; a room's farewells wait until
/// the room's log has reached the peer's leave, so no `remove-peer X` comes before `add-peer X`.
///
/// It starts held: entries wait until the node has read back from the logs what a resuming
/// client missed, then `start` queues `connected`, the missed entries and the held ones.
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
    private let observer: (any RoomFeedObserver)?
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

    /// What a waiting reader is handed: everything queued, or nil once the stream has ended.
    public typealias Reader = @Sendable ([StreamEvent]?) -> Void

    /// Where the stream is in one room's log.
    private struct RoomFeed {
        var position: EntryID
        /// While the room's log after the join (this entry) is being read: live entries wait.
        var catchingUpFrom: EntryID?
        /// A resumed feed's catch-up is asked for once `connected` is queued, not before.
        var catchUpDeferred = false
        var waiting: [Inbound] = []
        /// The peer's own leave came: nothing later in the room is for it. Its farewells come
        /// on its own log.
        var left = false
    }

    /// What a change asks of the node: rooms to follow or not (in order), logs to read.
    private struct Requests {
        var following: [(room: RoomID, follows: Bool)] = []
        var catchUps: [(room: RoomID, after: EntryID)] = []
    }

    private struct State {
        let me: PeerID
        let limits: Limits
        var confirmed = false
        /// `connected` is queued: the stream is past its start.
        var started = false
        var holding = true
        var held: [Inbound] = []
        var own = LogPosition.start
        var feeds: [RoomID: RoomFeed] = [:]
        /// Own-log entries waiting, in order, behind farewells whose room has not reached them.
        var parked: [Inbound] = []
        var requests = Requests()
        var ended: EndReason?
        /// The rooms it was in when it ended: its session keeps them through the grace period.
        var roomsAtEnd: [RoomID: EntryID] = [:]
        var queue = CircularBuffer<StreamEvent>(initialCapacity: 4)
        var queuedBytes = 0
        /// Bytes of the last batch taken, until the reader says they are written: they count
        /// against the limit too, so a stuck write cannot double what a stream holds.
        var unwrittenBytes = 0
        var reader: Reader?

        var cursor: EventCursor { EventCursor(own: own, rooms: feeds.mapValues(\.position)) }

        /// The cursor's text, the id of every event queued: written from the feeds directly, with
        /// no cursor built for it.
        var cursorText: String { EventCursor.text(own: own, rooms: feeds.lazy.map { ($0.key, $0.value.position) }) }

        var rooms: [RoomID: EntryID] {
            ended == nil ? feeds.filter { !$0.value.left }.mapValues(\.position) : roomsAtEnd
        }

        mutating func takeAll() -> [StreamEvent] {
            defer {
                queue.removeAll(keepingCapacity: true)
                unwrittenBytes = queuedBytes
                queuedBytes = 0
            }
            return Array(queue)
        }

        /// Queues the event with the cursor as its id; false if the queue is full.
        mutating func append(_ event: StreamEvent) -> Bool {
            if queue.count >= limits.maxQueuedEvents || unwrittenBytes + queuedBytes + event.data.readableBytes > limits.maxQueuedBytes {
                return false
            }
            var event = event
            event.id = cursorText
            queue.append(event)
            queuedBytes += event.data.readableBytes
            return true
        }

        /// Takes in one entry: delivers it, keeps it for later, or drops it as delivered
        /// before. False if the queue is full.
        mutating func receive(_ item: Inbound) -> Bool {
            guard case .room(let room) = item.source else {
                if !parked.isEmpty || mustWait(item) {
                    parked.append(item)
                    return parked.count <= limits.maxQueuedEvents
                }
                return applyOwn(item)
            }
            guard var feed = feeds[room] else { return true }
            if feed.catchingUpFrom != nil {
                feed.waiting.append(item)
                feeds[room] = feed
                return feed.waiting.count <= limits.maxQueuedEvents
            }
            return applyRoom(room, item) && drainParked()
        }

        /// Farewells wait until the room's log has reached the leave they are as of.
        func mustWait(_ item: Inbound) -> Bool {
            guard case .farewells(let room, let at, _, _) = item.message, item.entry > own.entry, let feed = feeds[room] else { return false }
            return !feed.left && (feed.position < at || feed.catchingUpFrom != nil)
        }

        mutating func drainParked() -> Bool {
            while let first = parked.first, !mustWait(first) {
                parked.removeFirst()
                guard applyOwn(first) else { return false }
            }
            return true
        }

        /// An entry of the peer's own log. Introductions and farewells hold one event per
        /// member; `own.delivered` counts those of its entry already queued.
        mutating func applyOwn(_ item: Inbound) -> Bool {
            guard item.entry >= own.entry else { return true }
            let fresh = item.entry > own.entry
            let skip = fresh ? 0 : Int(own.delivered)
            switch item.message {
            case .relay(let event, let data):
                guard fresh else { return true }
                own = LogPosition(entry: item.entry, delivered: 1)
                return append(StreamEvent(name: event, data: data))
            case .introductions(let room, let at, let members):
                if fresh {
                    // A feed still open means the peer never left: these are not news to it.
                    if let feed = feeds[room], !feed.left {
                        own = LogPosition(entry: item.entry, delivered: UInt64(members.count))
                        return true
                    }
                    if feeds[room] == nil { requests.following.append((room, true)) }
                    feeds[room] = RoomFeed(position: at, catchingUpFrom: at)
                    requests.catchUps.append((room, at))
                    own = LogPosition(entry: item.entry, delivered: 0)
                }
                for (index, member) in members.enumerated() where index >= skip {
                    own = LogPosition(entry: item.entry, delivered: UInt64(index + 1))
                    guard append(.peerEvent("add-peer", user: member, room: room, offer: true)) else { return false }
                }
                return true
            case .farewells(let room, _, _, let members):
                // No feed: the stream never showed this room, and has nothing to take back.
                guard feeds[room] != nil else {
                    own = LogPosition(entry: item.entry, delivered: UInt64(members.count))
                    return true
                }
                if fresh { own = LogPosition(entry: item.entry, delivered: 0) }
                for (index, member) in members.enumerated() where index >= skip {
                    own = LogPosition(entry: item.entry, delivered: UInt64(index + 1))
                    guard append(.peerEvent("remove-peer", user: member, room: room, offer: nil)) else { return false }
                }
                feeds[room] = nil
                requests.following.append((room, false))
                return true
            case .join, .leave:
                return true
            }
        }

        /// An entry of a room's log, past the catch-up: another member joined or left.
        mutating func applyRoom(_ room: RoomID, _ item: Inbound) -> Bool {
            guard let feed = feeds[room], !feed.left, item.entry > feed.position else { return true }
            // Moved first: the event's id holds the room's new position.
            feeds[room]?.position = item.entry
            switch item.message {
            case .join(let peer, let user) where peer != me:
                return append(.peerEvent("add-peer", user: user, room: room, offer: false))
            case .leave(let peer, let user) where peer != me:
                return append(.peerEvent("remove-peer", user: user, room: room, offer: nil))
            case .leave:
                feeds[room]?.left = true
                return true
            default:
                return true
            }
        }

        /// The read of a room's log after the join at `anchor`: then what waited meanwhile.
        mutating func caughtUp(in room: RoomID, from anchor: EntryID, with entries: [Inbound]) -> Bool {
            guard var feed = feeds[room], feed.catchingUpFrom == anchor else { return true }
            let waiting = feed.waiting
            feed.catchingUpFrom = nil
            feed.waiting = []
            feeds[room] = feed
            for item in entries + waiting {
                guard applyRoom(room, item) else { return false }
            }
            return drainParked()
        }
    }

    init(user: PeerUser, session: String, limits: Limits, observer: (any RoomFeedObserver)? = nil, onEnd: (@Sendable (EndReason) -> Void)? = nil) {
        self.user = user
        self.session = session
        self.limits = limits
        self.observer = observer
        self.onEnd = onEnd
        self.state = NIOLockedValueBox(State(me: user.id, limits: limits))
    }

    /// Why the stream ended, or nil while it is open.
    public var endReason: EndReason? { state.withLockedValue { $0.ended } }

    /// The id of the last event queued: where a client that reconnects now resumes.
    public var eventID: String { state.withLockedValue { $0.cursor.description } }

    /// The rooms the peer is in, as far as the entries delivered to this stream tell (until it
    /// ended), with the stream's position in each room's log: what the node puts back if Redis
    /// loses its data while it answers for the session.
    var rooms: [RoomID: EntryID] { state.withLockedValue { $0.rooms } }

    /// The rooms whose channels the stream follows.
    var followedRooms: Set<RoomID> { state.withLockedValue { Set($0.feeds.keys) } }

    /// The reader wrote the last batch out: its bytes no longer count against the limit.
    public func written() {
        state.withLockedValue { $0.unwrittenBytes = 0 }
    }

    /// Everything queued, waiting until there is something; nil once the stream has ended.
    /// One reader at a time (which calls `written()` once the batch is out). Returns nil if
    /// the reading task is cancelled.
    public func nextBatch() async -> [StreamEvent]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<[StreamEvent]?, Never>) in
                // Checked under the lock: a cancellation after it finds the reader there.
                wait({ continuation.resume(returning: $0) }, unless: { Task.isCancelled })
            }
        } onCancel: {
            stopWaiting()
        }
    }

    /// Hands `reader` everything queued: at once if something is, else as soon as something
    /// comes; nil once the stream has ended. One reader at a time (which calls `written()` once
    /// the batch is out). `reader` runs outside the stream's lock, on whichever thread queued
    /// the events or ended the stream, or on this one.
    public func whenReady(_ reader: @escaping Reader) {
        wait(reader, unless: { false })
    }

    private func wait(_ reader: @escaping Reader, unless givenUp: () -> Bool) {
        let ready: [StreamEvent]?? = state.withLockedValue { state in
            if state.ended != nil || givenUp() { return .some(.none) }
            if !state.queue.isEmpty { return .some(state.takeAll()) }
            state.reader = reader
            return .none
        }
        if let ready { reader(ready) }
    }

    /// The waiting reader, if any, is handed nil and forgotten; the stream stays open.
    private func stopWaiting() {
        state.withLockedValue { state in
            defer { state.reader = nil }
            return state.reader
        }?(nil)
    }

    /// Redis confirmed this stream as the peer's current one: deliver from now on.
    func confirm() {
        state.withLockedValue { $0.confirmed = true }
    }

    /// Holds entries until `start`: the node's subscription was lost, and what was sent
    /// meanwhile must come from the logs first.
    func hold() {
        state.withLockedValue { if $0.started { $0.holding = true } }
    }

    /// Whether `connected` was queued (a stream still starting reads its logs by itself).
    var isStarted: Bool { state.withLockedValue { $0.started } }

    /// Whether live entries wait (`hold`) for a catch-up from the logs.
    var isHolding: Bool { state.withLockedValue { $0.holding } }

    /// Where the stream is in each log.
    var cursor: EventCursor { state.withLockedValue { $0.cursor } }

    /// Takes up a resumed session where the client's cursor says it is, following each of
    /// its rooms (the node has checked that the peer is, or was, in them).
    /// - Parameters:
    ///   - leaving: rooms whose farewells are in what the client missed, with the entry they
    ///     are as of: a feed at or past it has seen the peer's leave, and takes nothing more.
    ///   - introducing: a room whose introductions the client saw only part of, with the entry
    ///     they are as of: its feed catches up from there, as after a join, once `connected`
    ///     is queued.
    func resume(from cursor: EventCursor, leaving: [RoomID: EntryID] = [:], introducing: [RoomID: EntryID] = [:]) {
        update { state in
            state.own = cursor.own
            for (room, position) in cursor.rooms {
                if state.feeds[room] == nil { state.requests.following.append((room, true)) }
                var feed = RoomFeed(position: position)
                if let at = leaving[room], position >= at { feed.left = true }
                if let at = introducing[room] {
                    feed.catchingUpFrom = at
                    feed.catchUpDeferred = true
                }
                state.feeds[room] = feed
            }
            return true
        }
    }

    /// Queues `connected` if given (with the cursor before the replay as its id), then `replay`
    /// (read from the logs, so it continues the cursor without a gap); then, if the
    /// subscription is still the one the replay was read under (`stillLive`, asked under the
    /// stream's lock), what was held meanwhile, and lets entries through.
    ///
    /// If the subscription was lost again meanwhile, the stream keeps holding: what arrives live
    /// from then on may follow a gap that only the logs can fill, and the next catch-up reads
    /// on from where this replay ends. Returns whether the stream let entries through.
    /// - Parameter fresh: forget the cursor first (a fresh session: nothing held belongs to it).
    @discardableResult
    func start(connected: StreamEvent?, replay: [Inbound], fresh: Bool = false, stillLive: () -> Bool) -> Bool {
        var released = false
        update { state in
            if fresh {
                for room in state.feeds.keys { state.requests.following.append((room, false)) }
                state.feeds = [:]
                state.own = .start
                state.held = []
                state.parked = []
            }
            if let connected {
                state.started = true
                guard state.append(connected) else { return false }
                for (room, feed) in state.feeds where feed.catchUpDeferred {
                    state.feeds[room]?.catchUpDeferred = false
                    if let anchor = feed.catchingUpFrom { state.requests.catchUps.append((room, anchor)) }
                }
            }
            for item in replay {
                guard state.receive(item) else { return false }
            }
            guard stillLive() else { return true }
            defer {
                state.held = []
                state.holding = false
            }
            released = true
            for item in state.held {
                guard state.receive(item) else { return false }
            }
            return true
        }
        return released
    }

    /// Delivers an entry that came live on a channel. Entries of the peer's own log wait
    /// until Redis has confirmed this stream: before that they were the older stream's.
    func deliver(_ item: Inbound) {
        update { state in
            if item.source == .own, !state.confirmed { return true }
            guard state.holding else { return state.receive(item) }
            state.held.append(item)
            return state.held.count <= limits.maxQueuedEvents
        }
    }

    /// The room's entries after the join at `anchor`, all of them up to the latest on the channel.
    func caughtUp(in room: RoomID, from anchor: EntryID, with entries: [Inbound]) {
        update { $0.caughtUp(in: room, from: anchor, with: entries) }
    }

    /// Whether the stream is still reading `room`'s log from the join at `anchor`.
    func isCatchingUp(in room: RoomID, from anchor: EntryID) -> Bool {
        state.withLockedValue { $0.ended == nil && $0.feeds[room]?.catchingUpFrom == anchor }
    }

    /// Adds an event made by this node (e.g. `ping`), not routed through Redis. Dropped while
    /// the stream is held.
    public func send(_ event: StreamEvent) {
        update { state in state.holding || state.append(event) }
    }

    /// Applies `change` to an open stream, telling the observer (in order, under the lock)
    /// which rooms it follows now; then wakes the reader with everything queued, or, if
    /// `change` found the queue full, ends the stream as too slow.
    private func update(_ change: (inout State) -> Bool) {
        let (fits, wake, catchUps) = state.withLockedValue {
            state -> (Bool, (reader: Reader, batch: [StreamEvent])?, [(room: RoomID, after: EntryID)]) in
            guard state.ended == nil else { return (true, nil, []) }
            let fits = change(&state)
            let requests = state.requests
            state.requests = Requests()
            for (room, follows) in requests.following {
                if follows { observer?.stream(self, follows: room) } else { observer?.stream(self, unfollows: room) }
            }
            guard fits, let reader = state.reader, !state.queue.isEmpty else { return (fits, nil, requests.catchUps) }
            state.reader = nil
            return (true, (reader, state.takeAll()), requests.catchUps)
        }
        for (room, position) in catchUps { observer?.stream(self, catchesUpIn: room, after: position) }
        if !fits { end(.tooSlow) }
        if let wake { wake.reader(wake.batch) }
    }

    /// Ends the stream; the reader gets nil, and it follows no room. The first reason given sticks.
    public func end(_ reason: EndReason) {
        let (first, reader) = state.withLockedValue { state -> (Bool, Reader?) in
            guard state.ended == nil else { return (false, nil) }
            state.roomsAtEnd = state.rooms
            state.ended = reason
            state.queue.removeAll()
            state.queuedBytes = 0
            state.held = []
            state.parked = []
            for room in state.feeds.keys { observer?.stream(self, unfollows: room) }
            state.feeds = [:]
            defer { state.reader = nil }
            return (true, state.reader)
        }
        reader?(nil)
        if first { onEnd?(reason) }
    }
}

extension StreamEvent {
    /// `add-peer` or `remove-peer`: `{"peer":<user>,"roomId":"<room>"[,"offer":…]}` (room ids
    /// need no JSON escaping, see `IdentifierRules`).
    static func peerEvent(_ name: String, user: ByteBuffer, room: RoomID, offer: Bool?) -> StreamEvent {
        var data = ByteBuffer()
        data.reserveCapacity(user.readableBytes + room.rawValue.utf8.count + 40)
        data.writeStaticString("{\"peer\":")
        data.writeImmutableBuffer(user)
        data.writeStaticString(",\"roomId\":\"")
        data.writeString(room.rawValue)
        switch offer {
        case true?: data.writeStaticString("\",\"offer\":true}")
        case false?: data.writeStaticString("\",\"offer\":false}")
        case nil: data.writeStaticString("\"}")
        }
        return StreamEvent(name: name, data: data)
    }
}
