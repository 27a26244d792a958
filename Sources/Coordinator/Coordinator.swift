import Foundation
import Logging
import LuaScripts
import NIOConcurrencyHelpers
import NIOCore
import RedisClient
import ServiceLifecycle

/// Signaling on one node, with no HTTP in it: the Service that runs it, and the front of its
/// parts, each the one owner of its rule:
///
/// - `Sessions`: a stream's opening, resume and close, and its session's end after the grace
///   period (with `LocalStreams`, the streams held and the routing of messages to them);
/// - `Rooms`: joins and leaves, each a pair of scripts safe to repeat;
/// - `Relays`: messages from one peer to another;
/// - `EventLogs`: reading back what a stream missed, and a joiner's catch-up on its room;
/// - `RecoveryGate` and `Recovery`: the heartbeat, and putting things back after Redis lost its
///   data, the subscription dropped, or a node died;
/// - `FleetStatus`: readiness, the fleet's records, gauges.
public final class Coordinator: Service, Sendable {
    private let context: NodeContext
    private let gate: RecoveryGate
    private let sessions: Sessions
    private let rooms: Rooms
    private let relays: Relays
    private let logs: EventLogs
    private let recovery: Recovery
    private let status: FleetStatus

    public var nodeID: String { context.nodeID }
    public var keys: KeySpace { context.keys }
    public var redis: RedisClient { context.redis }
    public var subscriber: RedisSubscriber { context.subscriber }
    public var scripts: ScriptRegistry { context.scripts }
    public var metrics: NodeMetrics { context.metrics }
    /// When this node started, for `/status`.
    public let startedAt = Date()
    /// How often the node renews its heartbeat record and looks for dead nodes. A node whose
    /// record is older than three intervals is dead: the first node to notice takes its peers
    /// out of their rooms.
    public var heartbeatInterval: Duration { recovery.heartbeatInterval }
    public let limits: RoomLimits
    /// How long a peer whose stream dropped keeps its rooms, waiting for its client to resume
    /// with `Last-Event-ID`. Zero: it leaves them at once.
    public var gracePeriod: Duration { sessions.gracePeriod }
    /// How long a join or leave waits through a Redis outage or the recovery window before it
    /// is refused with 503.
    public var membershipWait: Duration { gate.membershipWait }

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
    ///   - redis: the node's Redis (one server or a cluster); the coordinator opens its own
    ///     subscriber connections to the same primaries.
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
        self.limits = limits
        let localStreams = LocalStreams(keys: keys)
        let probes = SubscriptionProbes(keys: keys, nodeID: nodeID)
        let continuity = SubscriptionContinuity()
        let catchUp = CoalescedRequests()
        // Messages are routed on the subscriber's event loop, straight into the streams' queues.
        let subscriber = RedisSubscriber(
            client: redis, logger: logger,
            onMessage: { message in
                if !probes.received(message) { localStreams.route(message) }
            },
            onConnectionEvent: metrics.redisConnectionEvent,
            onInterrupted: { shard in
                // Nothing reaches the streams listening there until they have caught up from
                // the logs; the other shards' streams go on.
                continuity.lost(shard)
                localStreams.subscriptionBroke()
                localStreams.streams(listeningOn: shard).forEach { $0.hold() }
            },
            onResubscribed: { shard in
                continuity.resubscribed(shard)
                catchUp.trigger()
            })
        localStreams.attach(subscriber)
        let context = NodeContext(
            nodeID: nodeID, keys: keys, redis: redis, subscriber: subscriber, scripts: ScriptRegistry(redis: redis, metrics: metrics),
            metrics: metrics, logger: logger, logLimits: EventLogLimits(entries: Self.eventLogLength, retention: gracePeriod + .seconds(60)))
        let gate = RecoveryGate(context: context, heartbeatInterval: heartbeatInterval)
        let logs = EventLogs(context: context)
        let rooms = Rooms(context: context, gate: gate, limits: limits)
        let sessions = Sessions(
            context: context, gate: gate, rooms: rooms, logs: logs, localStreams: localStreams, streamLimits: streamLimits,
            gracePeriod: gracePeriod, continuity: continuity, catchUp: catchUp)
        self.context = context
        self.gate = gate
        self.logs = logs
        self.rooms = rooms
        self.relays = Relays(context: context)
        self.sessions = sessions
        self.recovery = Recovery(
            context: context, gate: gate, sessions: sessions, logs: logs, heartbeatInterval: heartbeatInterval, startedAt: startedAt,
            probes: probes)
        self.status = FleetStatus(context: context, localStreams: localStreams)
        let identities = ServerIdentities()
        redis.observeServers { [weak recovery] endpoint, identity in
            identities.record(identity, at: endpoint.address) { recovery?.serverChanged(endpoint) }
        }
    }

    // MARK: Running

    /// Keeps the subscriber connected until cancelled or shut down.
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                do { try await self.scripts.loadAll() } catch {
                    self.context.logger.warning("scripts not loaded yet; they load on first use", metadata: ["error": "\(error)"])
                }
            }
            group.addTask { await cancelWhenGracefulShutdown { await self.recovery.heartbeat() } }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    for await _ in self.sessions.catchUp.requests { await self.recovery.catchUpStreams() }
                }
            }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    for await _ in self.gate.epochCheck.requests { await self.recovery.checkEpoch() }
                }
            }
            group.addTask {
                await cancelWhenGracefulShutdown { await self.sessions.gracePeriods.run { await self.sessions.endSession(of: $0) } }
            }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    await withDiscardingTaskGroup { catchUps in
                        for await request in self.sessions.localStreams.catchUps { catchUps.addTask { await self.logs.catchUp(request) } }
                    }
                }
            }
            await cancelWhenGracefulShutdown { await self.subscriber.run() }
            group.cancelAll()
        }
        if sessions.gracePeriods.cancelAll() {
            // Streams closed by this shutdown stay resumable on other nodes for the grace
            // period; when this record expires, another node cleans up those not resumed.
            _ = try? await redis.send(["PEXPIRE", keys.node(nodeID), String(gracePeriod.inMilliseconds)])
        } else {
            _ = try? await redis.send(["DEL", keys.node(nodeID)])
        }
    }

    // MARK: Operations

    /// What `/readyz` checks: Redis answers, every script is loaded, the subscription is live.
    public func readiness() async -> [String: Bool] { await status.readiness() }

    /// The nodes with a live heartbeat record in Redis, as they described themselves.
    public func fleet() async throws -> [[String: Any]] { try await status.fleet() }

    /// Sets the gauges of rooms the peers of this node are in, and of their memberships.
    public func refreshMembershipGauges() async throws { try await status.refreshMembershipGauges() }

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
        try await sessions.openStream(for: user, granted: granted, resumingAfter: lastEvent, onEnd: onEnd)
    }

    /// Closes a stream. Unless a newer stream replaced it, the peer leaves every room (with
    /// `remove-peer` to the remaining members) once the grace period is over, if its client
    /// has not resumed the session by then.
    public func closeStream(_ stream: PeerStream) async { await sessions.closeStream(stream) }

    /// The number of streams open on this node.
    public var openStreamCount: Int { sessions.openStreamCount }

    /// Sends an event of the node's own (a `ping`) to every stream it holds.
    public func sendToAllStreams(_ event: StreamEvent) { sessions.sendToAllStreams(event) }

    // MARK: Rooms and relays

    /// Adds the peer to the room: it gets `add-peer` (offer: true) for every member and every
    /// member gets `add-peer` (offer: false) for it. Waits up to `membershipWait` through a
    /// Redis outage or recovery before it gives up with `RedisConnectionError`.
    public func join(_ user: PeerUser, room: RoomID) async throws -> JoinOutcome { try await rooms.join(user, room: room) }

    /// Takes the peer out of the room: every remaining member gets `remove-peer` for it, and
    /// it gets `remove-peer` for each of them. Returns false if it was not a member. Waits
    /// through an outage as `join` does.
    @discardableResult
    public func leave(_ user: PeerUser, room: RoomID) async throws -> Bool { try await rooms.leave(user, room: room) }

    /// Sends `event` with `{"peer": sender, "data": body}` to the peer's stream, if the two
    /// share a room. `body` must be compact JSON text (no newline).
    public func relay(from sender: PeerUser, to target: PeerID, event: EventName, body: String) async throws -> RelayOutcome {
        try await relays.relay(from: sender, to: target, event: event, body: body)
    }
}
