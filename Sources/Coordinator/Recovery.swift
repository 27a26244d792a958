import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RedisClient

/// Keeping the node's state true when things fail: the heartbeat, putting sessions back after
/// Redis lost its data, catching streams up after the subscription returned, probing the
/// subscription, and cleaning up after nodes that died.
final class Recovery: Sendable {
    let context: NodeContext
    private let gate: RecoveryGate
    private let sessions: Sessions
    private let logs: EventLogs
    /// How often the node renews its heartbeat record and looks for dead nodes.
    let heartbeatInterval: Duration
    let startedAt: Date
    private let probes: SubscriptionProbes
    /// The nodes whose streams had no heartbeat record at the last look (see `reapDeadNodes`).
    private let unrecorded = NIOLockedValueBox<Set<String>>([])
    private var continuity: SubscriptionContinuity { sessions.continuity }

    init(context: NodeContext, gate: RecoveryGate, sessions: Sessions, logs: EventLogs, heartbeatInterval: Duration, startedAt: Date, probes: SubscriptionProbes) {
        self.context = context
        self.gate = gate
        self.sessions = sessions
        self.logs = logs
        self.heartbeatInterval = heartbeatInterval
        self.startedAt = startedAt
        self.probes = probes
    }

    /// Keeps this node's record in Redis (`/status` lists the fleet from these records) and,
    /// each time: puts back what it holds if Redis lost its data, retries failed clean-ups,
    /// checks its subscription, and cleans up after nodes whose record expired.
    func heartbeat() async {
        var first = true
        var pause = Duration.zero
        while (try? await Task.sleep(for: pause)) != nil {
            pause = heartbeatInterval
            let candidate = UUID().uuidString
            let replies: [RESPValue]
            do {
                replies = try await context.redis.pipeline([renewRecord, ["SET", context.keys.epoch, candidate, "NX", "GET"]])
            } catch {
                // Redis is back soon, perhaps empty: look again then, not a whole interval later.
                let delay = (error as? RedisConnectionError)?.retryDelay ?? .milliseconds(250)
                pause = min(max(delay, .milliseconds(100)), heartbeatInterval)
                continue
            }
            if first {
                // Streams recorded under this node id by an earlier life of it are gone. The
                // node is serving already: the streams it holds are read after Redis's list.
                await sessions.reap(context.nodeID, keeping: { Set(self.sessions.heldStreams.map(\.session)) })
                first = false
            }
            await observeEpoch(replies[1].string ?? candidate)
            // Each primary asked who it is, on a command connection opened again if it dropped:
            // a primary that restarted or took over is noticed (see `serverChanged`) by every
            // node within a heartbeat, whether or not it had anything to send there, and so is
            // one demoted and promoted again behind a connection that stayed open.
            await context.redis.observeEachPrimary()
            await sessions.retryUnfinished()
            await checkSubscription()
            await reapDeadNodes()
        }
    }

    /// Sets this node's heartbeat record, which lives three intervals unless renewed.
    private var renewRecord: [String] {
        let record: [String: Any] = [
            "id": context.nodeID, "startedAt": startedAt.timeIntervalSince1970, "streams": sessions.localStreams.count,
        ]
        let json = String(decoding: (try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])) ?? Data(), as: UTF8.self)
        return ["SET", context.keys.node(context.nodeID), json, "PX", String(3 * heartbeatInterval.inMilliseconds)]
    }

    /// Reads Redis's epoch now (making one if it has none), for a join or leave that found it
    /// changed before this node's heartbeat did.
    func checkEpoch() async {
        let candidate = UUID().uuidString
        guard let reply = try? await context.redis.send(["SET", context.keys.epoch, candidate, "NX", "GET"]) else { return }
        await observeEpoch(reply.string ?? candidate)
    }

    /// If Redis holds another epoch than the one this node knew, it lost its data: the gate
    /// opens the recovery window, and this node puts back what it holds.
    func observeEpoch(_ current: String) async {
        guard let lost = await gate.observe(current) else { return }
        await gate.recovered(lostEpoch: lost, succeeded: await reassertSessions())
    }

    /// Redis lost its data, or `server` (one server, or one primary of a cluster) may have:
    /// puts back, silently, what this node answers for that lives there: the session and rooms
    /// of every stream it holds, and their memberships, so rooms are as they were and nobody
    /// sees churn. A room is repaired even when its members' sessions, on other shards, are
    /// intact. Safe when nothing was lost. Sessions already ended stay ended once their
    /// clean-up runs again (their members still get remove-peer). Returns false if it failed
    /// (Redis went away again): the caller tries again.
    func reassertSessions(on server: RedisEndpoint.Address? = nil) async -> Bool {
        gate.reassertions.begin()
        defer { gate.reassertions.end() }
        let topology = server == nil ? nil : try? await context.redis.topology()
        let keys = context.keys
        // Whether `key` lives on the server that may have lost it (every key, if it is not known).
        let lost = { (key: String) in server == nil || topology == nil || topology?.owner(of: key)?.address == server }
        let nodeRecordLost = lost(keys.nodeStreams(context.nodeID))
        let streams = sessions.heldStreams.filter { stream in
            nodeRecordLost || lost(keys.peer(stream.user.id)) || stream.rooms.keys.contains { lost(keys.roomMembers($0)) }
        }
        guard !streams.isEmpty else { return true }
        context.logger.warning(
            "Redis may have lost data: putting back the sessions this node holds there",
            metadata: ["sessions": "\(streams.count)", "server": "\(server.map { "\($0)" } ?? "all")"])
        do {
            // Run on each peer's own shard, which says whether the stream is still its session.
            let outcomes = try await context.scripts.run(streams.map { stream in
                ReassertCall(keys, user: stream.user, session: stream.session, node: context.nodeID, rooms: stream.rooms)
            })
            // (With no heartbeat record yet, as after the loss: other nodes wait a heartbeat
            // before they take these for a dead node's streams, see `reapDeadNodes`.)
            var commands = nodeRecordLost ? streams.map { ["SADD", keys.nodeStreams(context.nodeID), Sessions.streamEntry($0)] } : []
            var restored = 0
            for (stream, outcome) in zip(streams, outcomes) where outcome != .superseded {
                if outcome == .putBack { restored += 1 }
                for room in stream.rooms.keys where lost(keys.roomMembers(room)) {
                    commands.append(["HSETNX", keys.roomMembers(room), stream.user.id.rawValue, stream.user.json])
                }
            }
            if !commands.isEmpty { _ = try await context.redis.pipeline(commands) }
            context.metrics.sessionsReasserted.increment(by: restored)
            context.logger.info("sessions put back", metadata: ["sessions": "\(restored)", "checked": "\(streams.count)"])
            return true
        } catch {
            context.logger.error("putting back sessions failed", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// A command connection opened to a server with another identity than this node last saw
    /// there (a restart, a promoted replica): it may have lost writes, which its epoch cannot
    /// show when it kept most keys. Membership changes on this node wait from now (the call
    /// comes before any command runs on the new connection), the recovery window opens for
    /// the others, and this node puts back what it holds there.
    func serverChanged(_ endpoint: RedisEndpoint) {
        gate.reassertions.begin()
        Task {
            defer { gate.reassertions.end() }
            context.logger.warning("a Redis server restarted or was promoted: it may have lost writes", metadata: ["server": "\(endpoint)"])
            _ = try? await gate.openWindow()
            for attempt in 1...20 {
                if await reassertSessions(on: endpoint.address) { break }
                if attempt < 20 { try? await Task.sleep(for: heartbeatInterval / 4) }
            }
            _ = try? await gate.openWindow()
        }
    }

    /// After a shard's subscription came back: gives every held stream whose channels are all
    /// subscribed again what was sent to it meanwhile, from the logs, then lets live events
    /// through again. A stream the logs cannot complete is closed; its client resumes or starts
    /// afresh. A stream that listens on a shard still down keeps holding: that shard's return
    /// runs this again.
    ///
    /// Only under the subscriptions live now: if one of the stream's shards is lost again
    /// meanwhile, the stream keeps holding, and the catch-up that follows reads on.
    func catchUpStreams() async {
        let localStreams = sessions.localStreams
        var (streams, caughtUp) = (0, 0)
        for stream in localStreams.all where stream.isStarted && stream.isHolding {
            let channels = localStreams.channels(of: stream)
            guard channels.allSatisfy(context.subscriber.isConfirmed) else { continue }
            let shards = Set(channels.compactMap(context.subscriber.shard(of:)))
            guard let mark = continuity.mark(ifLive: shards) else { continue }
            let stillLive = { self.continuity.unbroken(since: mark, on: shards) }
            streams += 1
            // The command connection may still be coming back: try for a while before giving up.
            for attempt in 1...50 where stream.endReason == nil {
                guard stillLive() else { break }
                do {
                    if let missed = try await logs.missed(by: stream) {
                        stream.start(connected: nil, replay: missed, stillLive: stillLive)
                        caughtUp += missed.count
                    } else {
                        stream.end(.closed)
                    }
                    break
                } catch {
                    let waited = (try? await Task.sleep(for: .milliseconds(200))) != nil
                    if attempt == 50 || !waited { stream.end(.closed) }
                }
            }
        }
        if streams > 0 {
            context.logger.info("streams caught up after the subscription came back", metadata: ["streams": "\(streams)", "events": "\(caughtUp)"])
        }
    }

    /// Publishes a probe on this node's own channel in each shard. If Redis has no subscriber
    /// for it, or the previous probe there never came back, the shard's subscription is dead
    /// though its connection looks alive: reconnect it (it subscribes again to its channels).
    func checkSubscription() async {
        guard let topology = try? await context.redis.topology() else { return }
        let channels = probes.channels(for: topology)
        for gone in probes.forget(allBut: Set(channels.values)) { context.subscriber.unsubscribe(gone) }
        for (shard, channel) in channels {
            if !probes.isSubscribed(channel) {
                guard (try? await context.subscriber.subscribe(channel)) != nil else { continue }
                probes.subscribed(channel)
            }
            guard context.subscriber.isConnected(to: shard) else { continue }
            let probe = probes.next(on: channel)
            let receivers = (try? await context.redis.send(["SPUBLISH", channel, String(probe.number)]).int) ?? -1
            if receivers == 0 || probe.previousLost {
                context.metrics.subscriptionProbesFailed.increment()
                context.logger.warning(
                    "subscription is dead though its connection is open: reconnecting",
                    metadata: ["node": "\(context.nodeID)", "shard": "\(shard)"])
                probes.reset(channel)
                context.subscriber.reconnect(shard)
            }
        }
    }

    /// Finds nodes that hold streams in Redis but have had no heartbeat record for a whole
    /// heartbeat, and cleans up after each, if no other node is doing it already.
    func reapDeadNodes() async {
        // A node is dead once its record is missing at two heartbeats in a row: a record lost
        // with Redis's data comes back at its node's next heartbeat, and until then its
        // streams are a live node's (one it recorded again while putting things back, or a
        // stream it opened meanwhile).
        var missing: Set<String> = []
        let missingBefore = unrecorded.withLockedValue { $0 }
        guard let keys = try? await context.redis.keys(matching: context.keys.nodeStreams("*")) else { return }
        for key in keys {
            guard let open = key.firstIndex(of: "{"), let close = key.lastIndex(of: "}") else { continue }
            let node = String(key[key.index(after: open)..<close])
            guard node != context.nodeID, (try? await context.redis.send(["EXISTS", context.keys.node(node)]).int) == 0 else { continue }
            missing.insert(node)
            guard missingBefore.contains(node) else { continue }
            let claim = try? await context.redis.send(["SET", context.keys.nodeReaper(node), context.nodeID, "NX", "PX", "60000"])
            guard claim == .simpleString("OK") else { continue }
            await sessions.reap(node)
            _ = try? await context.redis.send(["DEL", context.keys.nodeReaper(node)])
        }
        // Only after a whole scan: a partial one would forget nodes already found missing.
        unrecorded.withLockedValue { $0 = missing }
    }
}

/// The losses of each shard's subscription, and the last one it has come back from (Redis
/// confirmed its channels again): a held stream may let live events through only after a
/// catch-up read under the subscriptions of its shards that are live now.
final class SubscriptionContinuity: Sendable {
    typealias Shard = RedisSubscriber.Shard
    /// Each shard's losses so far, to compare with later.
    typealias Mark = [Shard: Int]

    private let state = NIOLockedValueBox<[Shard: (losses: Int, recoveredFrom: Int)]>([:])

    /// The shard's connection dropped or could not be made, or a channel moved there.
    func lost(_ shard: Shard) { state.withLockedValue { $0[shard, default: (0, 0)].losses += 1 } }

    /// Redis confirmed the shard's channels again.
    func resubscribed(_ shard: Shard) {
        state.withLockedValue { state in state[shard, default: (0, 0)].recoveredFrom = state[shard, default: (0, 0)].losses }
    }

    /// Every shard's losses now.
    var mark: Mark { state.withLockedValue { $0.mapValues(\.losses) } }

    /// Every shard's losses now, if each of `shards` has come back from its last loss; nil
    /// while one is down.
    func mark(ifLive shards: Set<Shard>) -> Mark? {
        state.withLockedValue { state in
            for shard in shards { if let entry = state[shard], entry.recoveredFrom != entry.losses { return nil } }
            return state.mapValues(\.losses)
        }
    }

    /// Whether none of `shards` (every shard if nil) has been lost since `mark` was taken.
    func unbroken(since mark: Mark, on shards: Set<Shard>? = nil) -> Bool {
        state.withLockedValue { state in
            (shards.map(Array.init) ?? Array(state.keys)).allSatisfy { (state[$0]?.losses ?? 0) == (mark[$0] ?? 0) }
        }
    }
}

/// Requests to run one job (a catch-up, an epoch check), coalesced: a request made while the
/// job runs makes it run once more, never twice more.
final class CoalescedRequests: Sendable {
    let requests: AsyncStream<Void>
    private let sink: AsyncStream<Void>.Continuation

    init() {
        (requests, sink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    func trigger() { sink.yield() }
}

/// Whether the node is putting sessions back after Redis lost its data, and how many times it
/// has: a clean-up that overlaps one must run again.
final class Reassertions: Sendable {
    private struct State {
        var running = 0
        var completed = 0
        var waiters: [UInt64: CheckedContinuation<Int, Error>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state = NIOLockedValueBox(State())

    func begin() { state.withLockedValue { $0.running += 1 } }

    var isRunning: Bool { state.withLockedValue { $0.running > 0 } }

    func end() {
        let (waiters, completed) = state.withLockedValue { state -> ([CheckedContinuation<Int, Error>], Int) in
            state.running -= 1
            state.completed += 1
            guard state.running == 0 else { return ([], state.completed) }
            defer { state.waiters = [:] }
            return (Array(state.waiters.values), state.completed)
        }
        for waiter in waiters { waiter.resume(returning: completed) }
    }

    /// Waits until none is running; returns how many have completed. Throws if the task is
    /// cancelled meanwhile.
    func settled() async throws -> Int {
        let id = state.withLockedValue { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<Int, Error>) in
                let now: Result<Int, Error>? = state.withLockedValue { state in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if state.running == 0 { return .success(state.completed) }
                    state.waiters[id] = waiter
                    return nil
                }
                if let now { waiter.resume(with: now) }
            }
        } onCancel: {
            state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }
}

/// The identity each primary had when this node last opened a connection to it (see
/// `ServerIdentity`).
final class ServerIdentities: Sendable {
    private let known = NIOLockedValueBox<[RedisEndpoint.Address: ServerIdentity]>([:])

    /// Records the identity a server gave, and calls `onChange` if it may have lost writes
    /// since: it restarted or was promoted since this node last saw it, or this node never saw
    /// it and it was a replica once (a promoted replica, or one at an address this node meets
    /// late: putting back what it holds there is safe either way). A replica holds no slots.
    ///
    /// `onChange` runs under the lock: a node opens a connection to a server per event loop,
    /// and another one opening meanwhile must not find the new identity known, and be handed
    /// out, before `onChange` has held back the commands that must wait.
    func record(_ identity: ServerIdentity, at address: RedisEndpoint.Address, onChange: () -> Void) {
        guard identity.isPrimary else { return }
        known.withLockedValue { known in
            let previous = known[address]
            known[address] = identity
            let changed = previous.map { $0.runID != identity.runID || $0.replicationID != identity.replicationID } ?? identity.wasPromoted
            if changed { onChange() }
        }
    }
}
