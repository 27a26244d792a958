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
    private let probe: SubscriptionProbe
    /// The nodes whose streams had no heartbeat record at the last look (see `reapDeadNodes`).
    private let unrecorded = NIOLockedValueBox<Set<String>>([])
    private var continuity: SubscriptionContinuity { sessions.continuity }

    init(context: NodeContext, gate: RecoveryGate, sessions: Sessions, logs: EventLogs, heartbeatInterval: Duration, startedAt: Date, probe: SubscriptionProbe) {
        self.context = context
        self.gate = gate
        self.sessions = sessions
        self.logs = logs
        self.heartbeatInterval = heartbeatInterval
        self.startedAt = startedAt
        self.probe = probe
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

    /// Redis lost its data: puts back, silently, the session and rooms of every stream this
    /// node answers for, so rooms are as they were and nobody sees churn. Sessions already
    /// ended stay ended once their clean-up runs again (their members still get remove-peer).
    /// Returns false if it failed (Redis went away again): the next heartbeat tries again.
    func reassertSessions() async -> Bool {
        gate.reassertions.begin()
        defer { gate.reassertions.end() }
        let streams = sessions.heldStreams
        context.logger.warning("Redis lost its data: putting back the sessions this node holds", metadata: ["sessions": "\(streams.count)"])
        do {
            let putBack = try await context.scripts.run(streams.map { stream in
                ReassertCall(context.keys, user: stream.user, session: stream.session, node: context.nodeID, rooms: stream.rooms)
            })
            // (With no heartbeat record yet, as after the loss: other nodes wait a heartbeat
            // before they take these for a dead node's streams, see `reapDeadNodes`.)
            var commands = streams.map { ["SADD", context.keys.nodeStreams(context.nodeID), Sessions.streamEntry($0)] }
            var restored = 0
            for (stream, wasPutBack) in zip(streams, putBack) where wasPutBack {
                restored += 1
                for room in stream.rooms.keys { commands.append(["HSETNX", context.keys.roomMembers(room), stream.user.id.rawValue, stream.user.json]) }
            }
            _ = try await context.redis.pipeline(commands)
            context.metrics.sessionsReasserted.increment(by: restored)
            context.logger.info("sessions put back", metadata: ["sessions": "\(restored)"])
            return true
        } catch {
            context.logger.error("putting back sessions failed", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// After the subscription came back: gives every held stream what was sent to it while the
    /// subscription was down, from the logs, then lets live events through again. A stream
    /// the logs cannot complete is closed; its client resumes or starts afresh.
    ///
    /// Only under the subscription that is live now: if it is lost again meanwhile, the streams
    /// keep holding, and the catch-up that follows the next resubscription reads on.
    func catchUpStreams() async {
        guard let losses = continuity.liveSince else { return }
        let stillLive = { self.continuity.unbroken(since: losses) }
        let streams = sessions.localStreams.all.filter(\.isStarted)
        var caughtUp = 0
        for stream in streams {
            // The command connection may still be coming back: try for a while before giving up.
            for attempt in 1...50 where stream.endReason == nil {
                guard stillLive() else { return }
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
        if !streams.isEmpty {
            context.logger.info("streams caught up after the subscription came back", metadata: ["streams": "\(streams.count)", "events": "\(caughtUp)"])
        }
    }

    /// Publishes a probe on this node's own channel. If Redis has no subscriber for it, or the
    /// previous probe never came back, the subscription is dead though its connection looks
    /// alive: reconnect it (it subscribes again to every channel).
    func checkSubscription() async {
        let channel = context.keys.nodeProbe(context.nodeID)
        if !probe.isSubscribed {
            guard (try? await context.subscriber.subscribe(channel)) != nil else { return }
            probe.isSubscribed = true
        }
        guard context.subscriber.isConnected else { return }
        let lost = probe.outstanding
        let sent = probe.next()
        let receivers = (try? await context.redis.send(["SPUBLISH", channel, String(sent)]).int) ?? -1
        if receivers == 0 || lost {
            context.metrics.subscriptionProbesFailed.increment()
            context.logger.warning("subscription is dead though its connection is open: reconnecting", metadata: ["node": "\(context.nodeID)"])
            probe.reset()
            context.subscriber.reconnect()
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

/// The probes a node publishes on its own channel: their number, and the last one back.
final class SubscriptionProbe: Sendable {
    private let state = NIOLockedValueBox<(sent: UInt64, received: UInt64, subscribed: Bool)>((0, 0, false))

    var isSubscribed: Bool {
        get { state.withLockedValue { $0.subscribed } }
        set { state.withLockedValue { $0.subscribed = newValue } }
    }

    /// Whether the last probe sent has not come back.
    var outstanding: Bool { state.withLockedValue { $0.received < $0.sent } }

    /// The number of the next probe.
    func next() -> UInt64 {
        state.withLockedValue { state in
            state.sent += 1
            return state.sent
        }
    }

    func received(_ payload: ByteBuffer) {
        guard let number = UInt64(String(buffer: payload)) else { return }
        state.withLockedValue { $0.received = max($0.received, number) }
    }

    /// Forgets the probes in flight (the connection is being replaced).
    func reset() {
        state.withLockedValue { $0.received = $0.sent }
    }
}

/// The losses of the node's subscription, and the last one it has come back from (Redis
/// confirmed every channel again): a held stream may let live events through only after a
/// catch-up read under the subscription that is live now.
final class SubscriptionContinuity: Sendable {
    private let state = NIOLockedValueBox<(losses: Int, recoveredFrom: Int)>((0, 0))

    /// The connection dropped or could not be made.
    func lost() { state.withLockedValue { $0.losses += 1 } }

    /// Redis confirmed every channel on a new connection.
    func resubscribed() { state.withLockedValue { $0.recoveredFrom = $0.losses } }

    var losses: Int { state.withLockedValue { $0.losses } }

    /// Whether the subscription has not been lost since `losses` was read.
    func unbroken(since losses: Int) -> Bool { self.losses == losses }

    /// The number of losses so far if the subscription has come back from the last one; nil
    /// while it is down.
    var liveSince: Int? { state.withLockedValue { $0.recoveredFrom == $0.losses ? $0.losses : nil } }
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
