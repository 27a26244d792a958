import Foundation
import Logging
import LuaScripts
import NIOConcurrencyHelpers
import NIOCore
import RedisClient
import ServiceLifecycle

/// Signaling on one node, with no HTTP in it: opens and closes peers' streams, joins, leaves
/// and relays through the Lua scripts, and routes what arrives on the node's one subscriber
/// connection to the streams it holds.
public final class Coordinator: Service, Sendable {
    public let nodeID: String
    public let keys: KeySpace
    public let redis: RedisClient
    public let subscriber: RedisSubscriber
    public let scripts: ScriptRegistry
    private let streamLimits: PeerStream.Limits
    let logger: Logger
    let localStreams: LocalStreams
    public let metrics: NodeMetrics
    /// When this node started, for `/status`.
    public let startedAt = Date()
    /// How often the node renews its heartbeat record and looks for dead nodes. A node whose
    /// record is older than three intervals is dead: the first node to notice takes its peers
    /// out of their rooms.
    public let heartbeatInterval: Duration
    public let limits: RoomLimits
    /// How long a peer whose stream dropped keeps its rooms, waiting for its client to resume
    /// with `Last-Event-ID`. Zero: it leaves them at once.
    public let gracePeriod: Duration
    let gracePeriods: GracePeriods
    /// Closed streams whose clean-up failed (Redis was down), by session: retried each heartbeat.
    let unfinished = NIOLockedValueBox<[String: PeerStream]>([:])
    private let reportedFailures = NIOLockedValueBox<Set<String>>([])
    let reassertions = Reassertions()
    /// The `epoch` value Redis held when this node last looked (see `observeEpoch`).
    let epoch = NIOLockedValueBox<String?>(nil)
    var knownEpoch: String? { epoch.withLockedValue { $0 } }
    /// Requests to compare Redis's epoch with the known one now, rather than at the next heartbeat.
    let epochCheck = CoalescedRequests()
    let probe = SubscriptionProbe()
    let catchUp: CoalescedRequests
    let continuity = SubscriptionContinuity()
    /// How long event logs are kept: the grace period plus a minute for readers that were
    /// behind when they dropped.
    private let logLimits: EventLogLimits

    /// How long joins, leaves and session ends wait after a node notices that Redis lost its
    /// data: every other node notices within one heartbeat, and puts back what it holds.
    var recoveryWindow: Duration { heartbeatInterval * 3 / 2 }

    /// How long a join or leave waits through a Redis outage (a reconnect in progress) or the
    /// recovery window before it is refused with 503: a client that joins once, on `connected`,
    /// is never refused for a loss the nodes are already putting right.
    /// (The window, a reconnect back-off of up to 2 s, and a margin.)
    public var membershipWait: Duration { recoveryWindow + .seconds(5) }

    /// Commands whose replies `refuseWhileRecovering(_:knownEpoch:)` reads, to send along with
    /// others in one round trip.
    var recoveryChecks: [[String]] { [["PTTL", keys.recovering], ["GET", keys.epoch]] }

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
        try refuseWhileRecovering(try await redis.pipeline(recoveryChecks)[...], knownEpoch: known)
    }

    /// Entries kept in each event log (approximately: Redis trims whole blocks).
    public static let eventLogLength = 1000

    /// Limits on rooms, enforced in the scripts.
    public struct RoomLimits: Sendable {
        public var maxRoomSize: Int
        public var maxRoomsPerPeer: Int

        public init(maxRoomSize: Int = 100, maxRoomsPerPeer: Int = 16) {
            self.maxRoomSize = maxRoomSize
            self.maxRoomsPerPeer = maxRoomsPerPeer
        }
    }

    /// - Parameters:
    ///   - redis: the node's command connection; the coordinator opens its own subscriber
    ///     connection to the same server.
    public init(
        redis: RedisClient,
        keys: KeySpace,
        nodeID: String,
        streamLimits: PeerStream.Limits = .init(),
        heartbeatInterval: Duration = .seconds(3),
        gracePeriod: Duration = .seconds(10),
        limits: RoomLimits = .init(),
        metrics: NodeMetrics = .none,
        logger: Logger = Logger(label: "switchboard.coordinator")
    ) {
        self.metrics = metrics
        self.heartbeatInterval = heartbeatInterval
        self.gracePeriod = gracePeriod
        self.gracePeriods = GracePeriods(duration: gracePeriod)
        self.logLimits = EventLogLimits(entries: Self.eventLogLength, retention: gracePeriod + .seconds(60))
        self.limits = limits
        self.redis = redis
        self.keys = keys
        self.nodeID = nodeID
        self.scripts = ScriptRegistry(redis: redis, metrics: metrics)
        self.streamLimits = streamLimits
        self.logger = logger
        let localStreams = LocalStreams(keys: keys)
        self.localStreams = localStreams
        // Messages are routed on the subscriber's event loop, straight into the streams' queues.
        let probeChannel = keys.nodeProbe(nodeID)
        let probe = probe
        let catchingUp = CoalescedRequests()
        self.catchUp = catchingUp
        let continuity = continuity
        self.subscriber = RedisSubscriber(
            endpoint: redis.endpoint, logger: logger,
            onMessage: { message in
                if message.channel == probeChannel { probe.received(message.payload) } else { localStreams.route(message) }
            },
            onConnectionEvent: { event in
                metrics.redisConnectionEvent(event)
                // Nothing reaches the streams until they have caught up from the logs.
                if event != .restored {
                    continuity.lost()
                    localStreams.all.forEach { $0.hold() }
                }
            },
            onResubscribed: {
                continuity.resubscribed()
                catchingUp.trigger()
            })
        localStreams.attach(subscriber)
    }

    // MARK: Running

    /// Keeps the subscriber connected until cancelled or shut down.
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                do { try await self.scripts.loadAll() } catch {
                    self.logger.warning("scripts not loaded yet; they load on first use", metadata: ["error": "\(error)"])
                }
            }
            group.addTask { await cancelWhenGracefulShutdown { await self.heartbeat() } }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    for await _ in self.catchUp.requests { await self.catchUpStreams() }
                }
            }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    for await _ in self.epochCheck.requests { await self.checkEpoch() }
                }
            }
            group.addTask { await cancelWhenGracefulShutdown { await self.gracePeriods.run { await self.endSession(of: $0) } } }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    await withDiscardingTaskGroup { catchUps in
                        for await request in self.localStreams.catchUps { catchUps.addTask { await self.catchUp(request) } }
                    }
                }
            }
            await cancelWhenGracefulShutdown { await self.subscriber.run() }
            group.cancelAll()
        }
        if gracePeriods.cancelAll() {
            // Streams closed by this shutdown stay resumable on other nodes for the grace
            // period; when this record expires, another node cleans up those not resumed.
            _ = try? await redis.send(["PEXPIRE", keys.node(nodeID), String(gracePeriod.inMilliseconds)])
        } else {
            _ = try? await redis.send(["DEL", keys.node(nodeID)])
        }
    }


    // MARK: Operations

    /// What `/readyz` checks: Redis answers, every script is loaded, the subscription is live.
    public func readiness() async -> [String: Bool] {
        let redisUp = (try? await redis.send(["PING"])) == .simpleString("PONG")
        if redisUp, !scripts.allLoaded { try? await scripts.loadAll() }
        return ["redis": redisUp, "scripts": scripts.allLoaded, "subscription": subscriber.isConnected]
    }

    /// The nodes with a live heartbeat record in Redis, as they described themselves.
    public func fleet() async throws -> [[String: Any]] {
        var cursor = "0"
        var records: [[String: Any]] = []
        repeat {
            let reply = try await redis.send(["SCAN", cursor, "MATCH", keys.node("*"), "COUNT", "1000"]).array ?? []
            cursor = reply.first?.string ?? "0"
            let names = (reply.count > 1 ? reply[1].array ?? [] : []).compactMap(\.string)
            guard !names.isEmpty else { continue }
            for value in try await redis.pipeline(names.map { ["GET", $0] }) {
                guard let text = value.string,
                    let record = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
                else { continue }
                records.append(record)
            }
        } while cursor != "0"
        return records.sorted { ($0["id"] as? String ?? "") < ($1["id"] as? String ?? "") }
    }

    /// Sets the gauges of rooms the peers of this node are in, and of their memberships, from
    /// Redis (for the metrics scrape: one pipelined SMEMBERS per local peer).
    public func refreshMembershipGauges() async throws {
        let peers = Set(localStreams.all.map(\.user.id))
        guard !peers.isEmpty else {
            metrics.localRooms.record(0)
            metrics.localMemberships.record(0)
            return
        }
        let replies = try await redis.pipeline(peers.map { ["HKEYS", keys.peerRooms($0)] })
        var rooms = Set<String>()
        var memberships = 0
        for reply in replies {
            let ids = (reply.array ?? []).compactMap(\.string)
            memberships += ids.count
            rooms.formUnion(ids)
        }
        metrics.localRooms.record(rooms.count)
        metrics.localMemberships.record(memberships)
    }

    // MARK: Streams

    /// Opens a stream for `user` on this node. When this returns, Redis routes the peer's
    /// events here, any older stream of the same peer (on any node) is being closed, and the
    /// stream holds `connected` followed by what the client missed, if it is resuming.
    /// - Parameters:
    ///   - granted: the rooms the stream's token grants: a resumed session leaves the others.
    ///   - lastEvent: the client's `Last-Event-ID`: resume the peer's session after it, if the
    ///     session is still there. Without it, any earlier session of the peer ends first.
    ///   - onEnd: called once when the node ends the stream (replaced, too slow, closed).
    public func openStream(
        for user: PeerUser, granted: RoomGrants = .all, resumingAfter lastEvent: EventCursor? = nil,
        onEnd: (@Sendable (PeerStream.EndReason) -> Void)? = nil
    ) async throws -> PeerStream {
        let stream = PeerStream(user: user, session: UUID().uuidString, limits: streamLimits, observer: localStreams, onEnd: onEnd)
        localStreams.add(stream)
        // Everything for the peer comes on its channel from the moment Redis confirms the
        // subscription, unless the subscription is lost again before the stream starts.
        let losses = continuity.losses
        do {
            try await subscriber.subscribe(keys.channel(user.id))
        } catch {
            localStreams.remove(stream)
            throw error
        }
        let claimed = NIOLockedValueBox(false)
        do {
            // Recorded under this node first, so that if the node dies the stream is found.
            try await redis.send(["SADD", keys.nodeStreams(nodeID), Self.streamEntry(stream)])
            try await startSession(of: stream, granted: granted, resumingAfter: lastEvent, subscribedAt: losses, claimed: claimed)
        } catch {
            stream.end(.closed)
            if claimed.withLockedValue({ $0 }) {
                // connect.lua may have made this stream the peer's session before the failure:
                // it ends as a stream that dropped at once would, or the peer would keep its
                // rooms with no stream for good.
                await release(stream)
            } else {
                localStreams.remove(stream)
                subscriber.unsubscribe(keys.channel(user.id))
                _ = try? await redis.send(["SREM", keys.nodeStreams(nodeID), Self.streamEntry(stream)])
            }
            throw error
        }
        metrics.streamsOpen.increment()
        return stream
    }

    /// Makes `stream` the peer's current stream: takes over its session and replays what the
    /// client missed, when it can; otherwise starts a fresh session.
    /// - Parameter claimed: set once connect.lua may have run, making `stream` the peer's session.
    private func startSession(
        of stream: PeerStream, granted: RoomGrants, resumingAfter lastEvent: EventCursor?, subscribedAt losses: Int,
        claimed: NIOLockedValueBox<Bool>
    ) async throws {
        let peer = stream.user.id
        /// Lets the stream's events through, unless the subscription was lost since the peer's
        /// channel was confirmed: then it holds them until a catch-up has read the logs.
        func start(resumed: Bool, replay: [Inbound] = []) {
            let released = stream.start(
                connected: connectedEvent(stream, resumed: resumed), replay: replay, fresh: !resumed,
                stillLive: { continuity.unbroken(since: losses) })
            if !released { catchUp.trigger() }
        }
        if let lastEvent {
            // The peer's rooms must be back before the session's rooms are read.
            try await refuseWhileRecovering()
            claimed.withLockedValue { $0 = true }
            guard try await connect(stream, resume: true) else {
                metrics.resumed("expired")
                start(resumed: false)
                return
            }
            let joinedAt = try await roomsJoined(by: peer)
            // A token renewed with fewer rooms: the peer leaves the others, and is told so.
            for room in joinedAt.keys where !granted.allows(room) { try await leaveRoom(room, peer: peer, tellLeaver: true) }
            if let missed = try await replay(for: stream, resumingFrom: lastEvent, joinedAt: joinedAt) {
                metrics.resumed("resumed")
                metrics.eventsReplayed.increment(by: missed.count)
                start(resumed: true, replay: missed)
                return
            }
            // The logs no longer hold all it missed: its session ends as if it had gone for good.
            metrics.resumed("incomplete")
            logger.info("stream could not resume: too much missed", metadata: ["peer": "\(peer)"])
        }
        try await endSession(nil, of: peer)
        claimed.withLockedValue { $0 = true }
        _ = try await connect(stream, resume: false)
        start(resumed: false)
    }

    /// The rooms the peer is in, each with the entry of its room's log its membership began at.
    private func roomsJoined(by peer: PeerID) async throws -> [RoomID: EntryID] {
        let fields = (try await redis.send(["HGETALL", keys.peerRooms(peer)]).array ?? []).compactMap(\.string)
        var rooms: [RoomID: EntryID] = [:]
        for index in stride(from: 0, to: fields.count - 1, by: 2) {
            if let room = RoomID(fields[index]), let entry = EntryID(fields[index + 1]) { rooms[room] = entry }
        }
        return rooms
    }

    /// Runs connect.lua for `stream`; true if it took over the peer's existing session.
    private func connect(_ stream: PeerStream, resume: Bool) async throws -> Bool {
        try await scripts.run(ConnectCall(keys, user: stream.user, session: stream.session, node: nodeID, resume: resume))
    }

    /// `connected {"user": …}`, the first event of every stream (with `"resumed": true` when
    /// the events missed follow).
    private func connectedEvent(_ stream: PeerStream, resumed: Bool) -> StreamEvent {
        StreamEvent(name: "connected", data: ByteBuffer(string: "{\"user\":\(stream.user.json)\(resumed ? ",\"resumed\":true" : "")}"))
    }

    /// What a resuming client missed after its `Last-Event-ID`, from its own log and the log of
    /// each room in its cursor; nil if some log no longer holds all of it. Takes up the cursor
    /// on `stream` first, following the rooms the peer may see: those it is in, and those it
    /// left since (their farewells are in what it missed), each read from no earlier than the
    /// join it belongs to. (The id comes from the client: a room it names and was never in is
    /// dropped, and none is read from before the peer joined it.)
    func replay(for stream: PeerStream, resumingFrom cursor: EventCursor, joinedAt: [RoomID: EntryID]) async throws -> [Inbound]? {
        guard let own = try await readLogs(of: stream.user.id, own: cursor.own.entry, rooms: [:]) else { return nil }
        var earliest = joinedAt
        var farewells: Set<RoomID> = []
        for item in own {
            if case .farewells(let room, _, let joined, _) = item.message, farewells.insert(room).inserted { earliest[room] = joined }
        }
        let rooms = cursor.rooms.compactMap { room, position in
            earliest[room].map { (room, max(position, $0)) }
        }
        stream.resume(from: EventCursor(own: cursor.own, rooms: Dictionary(uniqueKeysWithValues: rooms)))
        for (room, _) in rooms { _ = try await subscriber.waitUntilSubscribed(keys.channel(room)) }
        guard let missed = try await readLogs(of: stream.user.id, own: nil, rooms: Dictionary(uniqueKeysWithValues: rooms)) else { return nil }
        return Self.interleaved(own + missed)
    }

    /// A started stream's logs after its cursor, for the catch-up after the subscription came
    /// back; nil if some log no longer holds all of it.
    func missedEvents(of stream: PeerStream) async throws -> [Inbound]? {
        let cursor = stream.cursor
        return try await readLogs(of: stream.user.id, own: cursor.own.entry, rooms: cursor.rooms).map(Self.interleaved)
    }

    /// Reads the peer's own log from `own` on (its entry included: it may hold events not all
    /// delivered) and each room's log after its entry, in one round trip; nil if one is trimmed.
    private func readLogs(of peer: PeerID, own: EntryID?, rooms: [RoomID: EntryID]) async throws -> [Inbound]? {
        var calls = rooms.map { ReadLogCall(keys, peer: peer, source: .room($0.key), after: $0.value) }
        if let own { calls.append(ReadLogCall(keys, peer: peer, source: .own, after: own, including: true)) }
        guard !calls.isEmpty else { return [] }
        var entries: [Inbound] = []
        for (call, reply) in zip(calls, try await scripts.run(calls)) {
            guard let read = call.inbound(reply) else { return nil }
            entries += read
        }
        return entries
    }

    /// Entries of several logs in the order Redis wrote them, as near as their ids tell (each
    /// log keeps its own order; the stream orders what depends on another log itself).
    static func interleaved(_ entries: [Inbound]) -> [Inbound] {
        entries.enumerated().sorted { ($0.element.entry, $0.offset) < ($1.element.entry, $1.offset) }.map(\.element)
    }

    /// Reads a room's log after a stream's join once the node listens on the room's channel,
    /// and hands it to the stream. Retried through a short outage; if the log cannot be read,
    /// the stream ends and its client resumes.
    func catchUp(_ request: LocalStreams.RoomCatchUp) async {
        let (stream, room, after) = (request.stream, request.room, request.after)
        let deadline = ContinuousClock.now + membershipWait
        while stream.isCatchingUp(in: room, from: after) {
            do {
                guard try await subscriber.waitUntilSubscribed(keys.channel(room)) else { return }
                let call = ReadLogCall(keys, peer: stream.user.id, source: .room(room), after: after)
                guard let entries = call.inbound(try await scripts.run(call)) else {
                    logger.warning("a room's log was trimmed before a joiner read it", metadata: ["peer": "\(stream.user.id)", "room": "\(room)"])
                    return stream.end(.closed)
                }
                return stream.caughtUp(in: room, from: after, with: entries)
            } catch {
                guard ContinuousClock.now < deadline, (try? await Task.sleep(for: .milliseconds(200))) != nil else { return stream.end(.closed) }
            }
        }
    }

    /// Closes a stream. Unless a newer stream replaced it, the peer leaves every room (with
    /// `remove-peer` to the remaining members) once the grace period is over, if its client
    /// has not resumed the session by then.
    public func closeStream(_ stream: PeerStream) async {
        if stream.endReason == .tooSlow {
            logger.warning("stream dropped: its reader fell behind", metadata: ["peer": "\(stream.user.id)"])
            metrics.slowClientsDropped.increment()
        }
        metrics.streamsOpen.decrement()
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
        subscriber.unsubscribe(keys.channel(stream.user.id))
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
                before = try await reassertions.settled()
                if try await !endSession(stream.session, of: stream.user.id) {
                    // No session at all: ended before, or Redis lost it. Only the epoch tells.
                    let known = epoch.withLockedValue { $0 }
                    let current = try await redis.send(["GET", keys.epoch]).string
                    if let known, current != known { throw RedisLostItsData() }
                }
            } while try await reassertions.settled() != before
            try await redis.send(["SREM", keys.nodeStreams(nodeID), Self.streamEntry(stream)])
            unfinished.withLockedValue { _ = $0.removeValue(forKey: stream.session) }
            reportedFailures.withLockedValue { _ = $0.remove(stream.session) }
        } catch {
            if reportedFailures.withLockedValue({ $0.insert(stream.session).inserted }) {
                logger.error("disconnect clean-up failed; trying again each heartbeat", metadata: ["peer": "\(stream.user.id)", "username": "\(stream.user.username)", "error": "\(error)"])
            }
        }
    }

    private struct RedisLostItsData: Error, CustomStringConvertible {
        var description: String { "Redis lost its data; the session is put back first" }
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
        try await refuseWhileRecovering()
        guard case .ended(let rooms) = try await scripts.run(DisconnectCall(keys, peer: peer, session: session)) else { return false }
        for room in rooms { try await leaveRoom(room, peer: peer, tellLeaver: false) }
        return true
    }

    /// The number of streams open on this node.
    public var openStreamCount: Int { localStreams.count }

    /// Sends an event of the node's own (a `ping`) to every stream it holds.
    public func sendToAllStreams(_ event: StreamEvent) {
        for stream in localStreams.all { stream.send(event) }
    }

    // MARK: Rooms

    public enum JoinOutcome: Sendable, Equatable {
        /// Joined; introduced to this many members.
        case joined(members: Int)
        case alreadyMember
    }

    /// The peer has no open stream, so it cannot be told who else is in the room.
    public struct NoOpenStream: Error, Sendable {}
    /// The room has `maxRoomSize` members.
    public struct RoomFull: Error, Sendable {}
    /// The peer is in `maxRoomsPerPeer` rooms.
    public struct TooManyRooms: Error, Sendable {}

    /// Adds the peer to the room: it gets `add-peer` (offer: true) for every member and every
    /// member gets `add-peer` (offer: false) for it. Waits up to `membershipWait` through a
    /// Redis outage or recovery before it gives up with `RedisConnectionError`.
    public func join(_ user: PeerUser, room: RoomID) async throws -> JoinOutcome {
        // Safe to repeat: a join that did reach Redis before its reply was lost comes back
        // as `alreadyMember`.
        try await Outage.retrying(until: .now + membershipWait) { try await joinOnce(user, room: room) }
    }

    private func joinOnce(_ user: PeerUser, room: RoomID) async throws -> JoinOutcome {
        let peer = user.id
        // Refuse early what would be refused anyway, so members see no add-peer/remove-peer flicker.
        let known = knownEpoch
        let checks = try await redis.pipeline([
            ["EXISTS", keys.peer(peer)], ["HLEN", keys.peerRooms(peer)], ["HEXISTS", keys.peerRooms(peer), room.rawValue],
        ] + recoveryChecks)
        try refuseWhileRecovering(checks.suffix(recoveryChecks.count), knownEpoch: known)
        guard checks[0].int == 1 else {
            metrics.joined("no_stream")
            throw NoOpenStream()
        }
        if limits.maxRoomsPerPeer > 0, checks[2].int == 0, (checks[1].int ?? 0) >= limits.maxRoomsPerPeer {
            metrics.refused("too_many_rooms")
            throw TooManyRooms()
        }
        // join.lua on the room's keys, then remember-room.lua on the peer's with the snapshot
        // join.lua took. The join is recorded on the peer only while it still has a stream (and
        // room to spare); otherwise it is undone below, so no ghost stays behind.
        let joined = try await scripts.run(JoinCall(keys, room: room, user: user, maxRoomSize: limits.maxRoomSize, log: logLimits))
        let snapshot: RoomSnapshot
        switch joined {
        case .roomFull:
            metrics.refused("room_full")
            throw RoomFull()
        case .joined(let taken), .alreadyMember(let taken):
            snapshot = taken
        }
        var recorded = try await scripts.run(RememberRoomCall(keys, peer: peer, room: room, maxRooms: limits.maxRoomsPerPeer, snapshot: snapshot, log: logLimits))
        if case .joined = joined, recorded == .recordedBefore {
            // The peer still had the room recorded from a leave that stopped before
            // forget-room.lua: this join is new, and its introductions must go out.
            try await redis.send(["HDEL", keys.peerRooms(peer), room.rawValue])
            recorded = try await scripts.run(RememberRoomCall(keys, peer: peer, room: room, maxRooms: limits.maxRoomsPerPeer, snapshot: snapshot, log: logLimits))
        }
        switch recorded {
        case .recorded:
            // (After `alreadyMember`: an earlier attempt stopped before remember-room.lua.)
            metrics.joined("joined")
            return .joined(members: snapshot.count)
        case .recordedBefore:
            metrics.joined("already_member")
            return .alreadyMember
        case .noSession, .tooManyRooms:
            // Not recorded on the peer, so no disconnect would take it out: undo the membership.
            try await leaveRoom(room, peer: peer, tellLeaver: false)
            if recorded == .tooManyRooms {
                metrics.refused("too_many_rooms")
                throw TooManyRooms()
            }
            metrics.joined("no_stream")
            throw NoOpenStream()
        }
    }

    /// Takes the peer out of the room: every remaining member gets `remove-peer` for it, and
    /// it gets `remove-peer` for each of them. Returns false if it was not a member. Waits
    /// through an outage as `join` does.
    @discardableResult
    public func leave(_ user: PeerUser, room: RoomID) async throws -> Bool {
        let left = try await Outage.retrying(until: .now + membershipWait) {
            try await refuseWhileRecovering()
            return try await leaveRoom(room, peer: user.id, tellLeaver: true)
        }
        metrics.left(left ? "left" : "not_member")
        return left
    }

    /// leave.lua on the room's keys, then, for an explicit leave (`tellLeaver`), forget-room.lua
    /// on the peer's with the snapshot leave.lua took; else the room is just forgotten on the
    /// peer (its stream is gone). Safe to repeat: a repeat finishes what an earlier attempt
    /// left undone. Returns false if the peer was not a member.
    @discardableResult
    private func leaveRoom(_ room: RoomID, peer: PeerID, tellLeaver: Bool) async throws -> Bool {
        let left = try await scripts.run(LeaveCall(keys, room: room, peer: peer, snapshot: tellLeaver, log: logLimits))
        let (wasMember, snapshot) = switch left {
        case .left(let snapshot): (true, snapshot)
        case .notMember(let snapshot): (false, snapshot)
        }
        guard tellLeaver else {
            try await redis.send(["HDEL", keys.peerRooms(peer), room.rawValue])
            return wasMember
        }
        let forgotten = try await scripts.run(ForgetRoomCall(keys, peer: peer, room: room, snapshot: snapshot, log: logLimits))
        return wasMember || forgotten == .forgotten
    }

    // MARK: Relays

    public enum RelayOutcome: Sendable, Equatable {
        case delivered
        /// The peer has no open stream (never connected, or gone).
        case noSuchPeer
        /// The peer shares no room with the sender.
        case notInSharedRoom
        /// The peer has a session but no stream right now (it dropped and may resume, or its
        /// node died): the message waits in its event log.
        case held
    }

    /// Sends `event` with `{"peer": sender, "data": body}` to the peer's stream, if the two
    /// share a room. `body` must be compact JSON text (no newline).
    public func relay(from sender: PeerUser, to target: PeerID, event: EventName, body: String) async throws -> RelayOutcome {
        let data = "{\"peer\":\(sender.json),\"data\":\(body)}"
        let senderRooms = (try await redis.send(["HKEYS", keys.peerRooms(sender.id)]).array ?? []).compactMap(\.string)
        let outcome: RelayOutcome = switch try await scripts.run(
            RelayCall(keys, target: target, event: event, data: data, senderRooms: senderRooms, log: logLimits)
        ) {
        case .noSharedRoom: .notInSharedRoom
        case .noSession: .noSuchPeer
        case .published(receivers: 0): .held
        case .published: .delivered
        }
        metrics.relayed("\(outcome)")
        return outcome
    }
}
