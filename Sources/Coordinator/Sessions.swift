import Foundation
import NIOConcurrencyHelpers
import NIOCore
import RedisClient

/// The sessions this node answers for, from a stream's opening to its session's end: open
/// streams, streams waiting out their grace period for a resume, and ended sessions whose
/// clean-up has not succeeded yet (retried each heartbeat). The one owner of the rule "a
/// session this node answers for ends exactly once, after its grace period, unless a newer
/// stream took it over".
final class Sessions: Sendable {
    let context: NodeContext
    private let gate: RecoveryGate
    private let rooms: Rooms
    private let logs: EventLogs
    private let streamLimits: PeerStream.Limits
    /// How long a peer whose stream dropped keeps its rooms, waiting for its client to resume.
    let gracePeriod: Duration
    let localStreams: LocalStreams
    let gracePeriods: GracePeriods
    /// Closed streams whose clean-up failed (Redis was down), by session: retried each heartbeat.
    private let unfinished = NIOLockedValueBox<[String: PeerStream]>([:])
    private let reportedFailures = NIOLockedValueBox<Set<String>>([])
    /// The losses of the node's subscription: a stream lets live events through only once it
    /// has read the logs under the subscription that is live now.
    let continuity: SubscriptionContinuity
    /// Requests to catch the held streams up from the logs.
    let catchUp: CoalescedRequests

    init(
        context: NodeContext, gate: RecoveryGate, rooms: Rooms, logs: EventLogs, localStreams: LocalStreams,
        streamLimits: PeerStream.Limits, gracePeriod: Duration, continuity: SubscriptionContinuity, catchUp: CoalescedRequests
    ) {
        self.context = context
        self.gate = gate
        self.rooms = rooms
        self.logs = logs
        self.localStreams = localStreams
        self.streamLimits = streamLimits
        self.gracePeriod = gracePeriod
        self.gracePeriods = GracePeriods(duration: gracePeriod)
        self.continuity = continuity
        self.catchUp = catchUp
    }

    /// Opens a stream for `user` on this node. When this returns, Redis routes the peer's
    /// events here, any older stream of the same peer (on any node) is being closed, and the
    /// stream holds `connected` followed by what the client missed, if it is resuming.
    /// - Parameters:
    ///   - granted: the rooms the stream's token grants: a resumed session leaves the others.
    ///   - lastEvent: the client's `Last-Event-ID`: resume the peer's session after it, if the
    ///     session is still there. Without it, any earlier session of the peer ends first.
    ///   - onEnd: called once when the node ends the stream (replaced, too slow, closed).
    func openStream(
        for user: PeerUser, granted: RoomGrants = .all, resumingAfter lastEvent: EventCursor? = nil,
        onEnd: (@Sendable (PeerStream.EndReason) -> Void)? = nil
    ) async throws -> PeerStream {
        let stream = PeerStream(user: user, session: UUID().uuidString, limits: streamLimits, observer: localStreams, onEnd: onEnd)
        localStreams.add(stream)
        // Everything for the peer comes on its channel from the moment Redis confirms the
        // subscription, unless the subscription is lost again before the stream starts.
        let mark = continuity.mark
        do {
            try await context.subscriber.subscribe(context.keys.channel(user.id))
        } catch {
            localStreams.remove(stream)
            throw error
        }
        let claimed = NIOLockedValueBox(false)
        do {
            // Recorded under this node first, so that if the node dies the stream is found.
            try await context.redis.send(["SADD", context.keys.nodeStreams(context.nodeID), Self.streamEntry(stream)])
            try await startSession(of: stream, granted: granted, resumingAfter: lastEvent, subscribedAt: mark, claimed: claimed)
        } catch {
            stream.end(.closed)
            if claimed.withLockedValue({ $0 }) {
                // connect.lua may have made this stream the peer's session before the failure:
                // it ends as a stream that dropped at once would, or the peer would keep its
                // rooms with no stream for good.
                await release(stream)
            } else {
                localStreams.remove(stream)
                context.subscriber.unsubscribe(context.keys.channel(user.id))
                _ = try? await context.redis.send(["SREM", context.keys.nodeStreams(context.nodeID), Self.streamEntry(stream)])
            }
            throw error
        }
        context.metrics.streamsOpen.increment()
        return stream
    }

    /// Makes `stream` the peer's current stream: takes over its session and replays what the
    /// client missed, when it can; otherwise starts a fresh session.
    /// - Parameter claimed: set once connect.lua may have run, making `stream` the peer's session.
    private func startSession(
        of stream: PeerStream, granted: RoomGrants, resumingAfter lastEvent: EventCursor?, subscribedAt mark: SubscriptionContinuity.Mark,
        claimed: NIOLockedValueBox<Bool>
    ) async throws {
        let peer = stream.user.id
        /// Lets the stream's events through, unless a subscription was lost since the peer's
        /// channel was confirmed (any shard's: the rooms it resumes may live on any): then it
        /// holds them until a catch-up has read the logs.
        func start(resumed: Bool, replay: [Inbound] = []) {
            let released = stream.start(
                connected: connectedEvent(stream, resumed: resumed), replay: replay, fresh: !resumed,
                stillLive: { continuity.unbroken(since: mark) })
            if !released { catchUp.trigger() }
        }
        if let lastEvent {
            // The peer's rooms must be back before the session's rooms are read.
            try await gate.refuseWhileRecovering()
            claimed.withLockedValue { $0 = true }
            guard try await connect(stream, resume: true) else {
                context.metrics.resumed("expired")
                start(resumed: false)
                return
            }
            let joinedAt = try await roomsJoined(by: peer)
            // A token renewed with fewer rooms: the peer leaves the others, and is told so.
            for room in joinedAt.keys where !granted.allows(room) { try await rooms.leaveRoom(room, peer: peer, tellLeaver: true) }
            if let missed = try await logs.replay(for: stream, resumingFrom: lastEvent, joinedAt: joinedAt) {
                context.metrics.resumed("resumed")
                context.metrics.eventsReplayed.increment(by: missed.count)
                start(resumed: true, replay: missed)
                return
            }
            // The logs no longer hold all it missed: its session ends as if it had gone for good.
            context.metrics.resumed("incomplete")
            context.logger.info("stream could not resume: too much missed", metadata: ["peer": "\(peer)"])
        }
        try await endSession(nil, of: peer)
        claimed.withLockedValue { $0 = true }
        _ = try await connect(stream, resume: false)
        start(resumed: false)
    }

    /// The rooms the peer is in, each with the entry of its room's log its membership began at.
    private func roomsJoined(by peer: PeerID) async throws -> [RoomID: EntryID] {
        let fields = (try await context.redis.send(["HGETALL", context.keys.peerRooms(peer)]).array ?? []).compactMap(\.string)
        var rooms: [RoomID: EntryID] = [:]
        for index in stride(from: 0, to: fields.count - 1, by: 2) {
            if let room = RoomID(fields[index]), let entry = EntryID(fields[index + 1]) { rooms[room] = entry }
        }
        return rooms
    }

    /// Runs connect.lua for `stream`; true if it took over the peer's existing session.
    private func connect(_ stream: PeerStream, resume: Bool) async throws -> Bool {
        try await context.scripts.run(ConnectCall(context.keys, user: stream.user, session: stream.session, node: context.nodeID, resume: resume))
    }

    /// `connected {"user": …}`, the first event of every stream (with `"resumed": true` when
    /// the events missed follow).
    private func connectedEvent(_ stream: PeerStream, resumed: Bool) -> StreamEvent {
        StreamEvent(name: "connected", data: ByteBuffer(string: "{\"user\":\(stream.user.json)\(resumed ? ",\"resumed\":true" : "")}"))
    }

    /// Closes a stream. Unless a newer stream replaced it, the peer leaves every room (with
    /// `remove-peer` to the remaining members) once the grace period is over, if its client
    /// has not resumed the session by then.
    func closeStream(_ stream: PeerStream) async {
        if stream.endReason == .tooSlow {
            context.logger.warning("stream dropped: its reader fell behind", metadata: ["peer": "\(stream.user.id)"])
            context.metrics.slowClientsDropped.increment()
        }
        context.metrics.streamsOpen.decrement()
        stream.end(.closed)
        await release(stream)
    }

    /// Lets go of an ended stream: it leaves the open streams and its channel, and its session
    /// ends after the grace period (at once without one, or if a newer stream replaced it).
    private func release(_ stream: PeerStream) async {
        // Held by the grace period or the clean-up before it leaves the open streams, so the
        // node always answers for it (see `heldStreams`).
        let waits = gracePeriod > .zero && stream.endReason != .replaced
        if waits {
            gracePeriods.wait(for: stream)
        } else {
            unfinished.withLockedValue { $0[stream.session] = stream }
        }
        localStreams.remove(stream)
        context.subscriber.unsubscribe(context.keys.channel(stream.user.id))
        if !waits { await endSession(of: stream) }
    }

    /// Ends a closed stream's session for good, unless another stream took it over. If Redis
    /// is unreachable, or lost its data and the heartbeat has not put things back yet, the
    /// heartbeat tries again until it succeeds.
    func endSession(of stream: PeerStream) async {
        unfinished.withLockedValue { $0[stream.session] = stream }
        do {
            // Runs again if Redis lost its data and the node put sessions back meanwhile: this
            // one may be among them, and must then end again.
            var before: Int
            repeat {
                before = try await gate.reassertions.settled()
                if try await !endSession(stream.session, of: stream.user.id) {
                    // No session at all: ended before, or Redis lost it. Only the epoch tells.
                    try await gate.refuseIfDataWasLost()
                }
            } while try await gate.reassertions.settled() != before
            try await context.redis.send(["SREM", context.keys.nodeStreams(context.nodeID), Self.streamEntry(stream)])
            unfinished.withLockedValue { _ = $0.removeValue(forKey: stream.session) }
            reportedFailures.withLockedValue { _ = $0.remove(stream.session) }
        } catch {
            if reportedFailures.withLockedValue({ $0.insert(stream.session).inserted }) {
                context.logger.error("disconnect clean-up failed; trying again each heartbeat", metadata: ["peer": "\(stream.user.id)", "username": "\(stream.user.username)", "error": "\(error)"])
            }
        }
    }

    /// Every session this node answers for: open streams, streams in their grace period, and
    /// closed streams whose clean-up has not succeeded yet.
    var heldStreams: [PeerStream] {
        var seen = Set<String>()
        return (localStreams.all + gracePeriods.streams + unfinished.withLockedValue { Array($0.values) }).filter { seen.insert($0.session).inserted }
    }

    /// A stream's member in its node's stream set (`reap` reads it back).
    static func streamEntry(_ stream: PeerStream) -> String { "\(stream.user.id) \(stream.session)" }

    /// Ends a peer's session (nil: whatever session it has): unless a newer stream took it
    /// over, the peer leaves every room, with `remove-peer` to the remaining members. Safe to
    /// repeat. Returns false if Redis had no session for the peer at all.
    @discardableResult
    func endSession(_ session: String?, of peer: PeerID) async throws -> Bool {
        try await gate.refuseWhileRecovering()
        guard case .ended(let left) = try await context.scripts.run(DisconnectCall(context.keys, peer: peer, session: session)) else {
            return false
        }
        for room in left { try await rooms.leaveRoom(room, peer: peer, tellLeaver: false) }
        return true
    }

    /// The number of streams open on this node.
    var openStreamCount: Int { localStreams.count }

    /// Sends an event of the node's own (a `ping`) to every stream it holds. The same periodic
    /// round lets go of the rooms' recent entries that are too old (a quiet room keeps none
    /// past one ping interval).
    func sendToAllStreams(_ event: StreamEvent) {
        for stream in localStreams.all { stream.send(event) }
        localStreams.pruneRecentEntries()
    }


    /// Ends every stream Redis records for `node` (but the sessions `keeping` returns), exactly
    /// as if each had closed: the peer leaves its rooms and the remaining members get
    /// `remove-peer`.
    ///
    /// `keeping` is asked only once Redis has answered: a stream joins the node's open streams
    /// before it is recorded in Redis, so every live stream Redis lists is in the answer. (Asked
    /// before, it would miss a stream opened meanwhile and end a live session.)
    func reap(_ node: String, keeping: () -> Set<String> = { [] }) async {
        guard let entries = try? await context.redis.send(["SMEMBERS", context.keys.nodeStreams(node)]).array else { return }
        let kept = keeping()
        var reaped = 0
        for entry in entries.compactMap(\.string) {
            let parts = entry.split(separator: " ", maxSplits: 1).map(String.init)
            guard parts.count == 2, let peer = PeerID(parts[0]), !kept.contains(parts[1]) else { continue }
            do {
                try await endSession(parts[1], of: peer)
                _ = try await context.redis.send(["SREM", context.keys.nodeStreams(node), entry])
                reaped += 1
            } catch {
                context.logger.warning("clean-up after a dead node failed", metadata: ["node": "\(node)", "peer": "\(peer)", "error": "\(error)"])
            }
        }
        if reaped > 0 {
            context.metrics.peersReaped.increment(by: reaped)
            context.logger.info("cleaned up after a node that stopped", metadata: ["node": "\(node)", "peers": "\(reaped)"])
        }
    }

    /// Ends, once more, each closed stream whose clean-up failed before.
    func retryUnfinished() async {
        for stream in unfinished.withLockedValue({ Array($0.values) }) { await endSession(of: stream) }
    }
}
