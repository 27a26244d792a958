import Foundation
import LuaScripts
import Logging
import NIOCore
import RedisClient
import ServiceLifecycle
import Synchronization

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
    private let logger: Logger
    private let localStreams: LocalStreams
    public let metrics: NodeMetrics
    /// When this node started, for `/status`.
    public let startedAt = Date()
    /// How often the node renews its heartbeat record and looks for dead nodes. A node whose
    /// record is older than three intervals is dead: the first node to notice takes its peers
    /// out of their rooms.
    public let heartbeatInterval: Duration
    public let limits: RoomLimits

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
        limits: RoomLimits = .init(),
        metrics: NodeMetrics = .none,
        logger: Logger = Logger(label: "switchboard.coordinator")
    ) {
        self.metrics = metrics
        self.heartbeatInterval = heartbeatInterval
        self.limits = limits
        self.redis = redis
        self.keys = keys
        self.nodeID = nodeID
        self.scripts = ScriptRegistry(redis: redis, metrics: metrics)
        self.streamLimits = streamLimits
        self.logger = logger
        let localStreams = LocalStreams(channelPrefix: keys.channelPrefix)
        self.localStreams = localStreams
        // Messages are routed on the subscriber's event loop, straight into the streams' queues.
        self.subscriber = RedisSubscriber(
            endpoint: redis.endpoint, logger: logger, onMessage: localStreams.route,
            onConnectionEvent: metrics.redisConnectionEvent)
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
            await cancelWhenGracefulShutdown { await self.subscriber.run() }
            group.cancelAll()
        }
        _ = try? await redis.send(["DEL", keys.node(nodeID)])
    }

    /// Keeps this node's record in Redis (`/status` lists the fleet from these records) and,
    /// each time, cleans up after nodes whose record expired.
    private func heartbeat() async {
        let ttlMilliseconds = String(3 * heartbeatInterval.inMilliseconds)
        var first = true
        repeat {
            let record: [String: Any] = [
                "id": nodeID, "startedAt": startedAt.timeIntervalSince1970, "streams": localStreams.count,
            ]
            let json = String(decoding: (try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])) ?? Data(), as: UTF8.self)
            _ = try? await redis.send(["SET", keys.node(nodeID), json, "PX", ttlMilliseconds])
            if first {
                // Streams recorded under this node id by an earlier life of it are gone.
                await reap(nodeID, keeping: Set(localStreams.all.map(\.session)))
                first = false
            }
            await reapDeadNodes()
        } while (try? await Task.sleep(for: heartbeatInterval)) != nil
    }

    /// Finds nodes that hold streams in Redis but have no heartbeat, and cleans up after each,
    /// if no other node is doing it already.
    private func reapDeadNodes() async {
        var cursor = "0"
        repeat {
            guard let reply = try? await redis.send(["SCAN", cursor, "MATCH", keys.nodeStreams("*"), "COUNT", "1000"]).array,
                reply.count == 2
            else { return }
            cursor = reply[0].string ?? "0"
            for key in (reply[1].array ?? []).compactMap(\.string) {
                guard let open = key.firstIndex(of: "{"), let close = key.lastIndex(of: "}") else { continue }
                let node = String(key[key.index(after: open)..<close])
                guard node != nodeID, (try? await redis.send(["EXISTS", keys.node(node)]).int) == 0 else { continue }
                let claim = try? await redis.send(["SET", keys.nodeReaper(node), nodeID, "NX", "PX", "60000"])
                guard claim == .simpleString("OK") else { continue }
                await reap(node)
                _ = try? await redis.send(["DEL", keys.nodeReaper(node)])
            }
        } while cursor != "0"
    }

    /// Ends every stream Redis records for `node` (but those in `keeping`), exactly as if each
    /// had closed: the peer leaves its rooms and the remaining members get `remove-peer`.
    private func reap(_ node: String, keeping: Set<String> = []) async {
        guard let entries = try? await redis.send(["SMEMBERS", keys.nodeStreams(node)]).array else { return }
        var reaped = 0
        for entry in entries.compactMap(\.string) {
            let parts = entry.split(separator: " ", maxSplits: 1).map(String.init)
            guard parts.count == 2, let peer = PeerID(parts[0]), !keeping.contains(parts[1]) else { continue }
            do {
                try await endSession(parts[1], of: peer)
                _ = try await redis.send(["SREM", keys.nodeStreams(node), entry])
                reaped += 1
            } catch {
                logger.warning("clean-up after a dead node failed", metadata: ["node": "\(node)", "peer": "\(peer)", "error": "\(error)"])
            }
        }
        if reaped > 0 {
            metrics.peersReaped.increment(by: reaped)
            logger.info("cleaned up after a node that stopped", metadata: ["node": "\(node)", "peers": "\(reaped)"])
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
        let replies = try await redis.pipeline(peers.map { ["SMEMBERS", keys.peerRooms($0)] })
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
    /// events here and any older stream of the same peer (on any node) is being closed.
    /// - Parameter onEnd: called once when the node ends the stream (replaced, too slow, closed).
    public func openStream(for user: PeerUser, onEnd: (@Sendable (PeerStream.EndReason) -> Void)? = nil) async throws -> PeerStream {
        let stream = PeerStream(user: user, session: UUID().uuidString, limits: streamLimits, onEnd: onEnd)
        localStreams.add(stream)
        do {
            try await subscriber.subscribe(keys.channel(user.id))
        } catch {
            localStreams.remove(stream)
            throw error
        }
        do {
            // Recorded under this node first, so that if the node dies the stream is found.
            try await redis.send(["SADD", keys.nodeStreams(nodeID), Self.streamEntry(stream)])
            try await scripts.run(
                .connect, keys: [keys.peer(user.id)],
                arguments: [stream.session, nodeID, user.json, keys.channel(user.id)])
        } catch {
            localStreams.remove(stream)
            subscriber.unsubscribe(keys.channel(user.id))
            _ = try? await redis.send(["SREM", keys.nodeStreams(nodeID), Self.streamEntry(stream)])
            throw error
        }
        metrics.streamsOpen.increment()
        return stream
    }

    /// Closes a stream and, unless a newer stream replaced it, takes the peer out of every room
    /// with `remove-peer` to the remaining members.
    public func closeStream(_ stream: PeerStream) async {
        if stream.endReason == .tooSlow {
            logger.warning("stream dropped: its reader fell behind", metadata: ["peer": "\(stream.user.id)"])
            metrics.slowClientsDropped.increment()
        }
        metrics.streamsOpen.decrement()
        stream.end(.closed)
        localStreams.remove(stream)
        subscriber.unsubscribe(keys.channel(stream.user.id))
        let peer = stream.user.id
        do {
            try await endSession(stream.session, of: peer)
            try await redis.send(["SREM", keys.nodeStreams(nodeID), Self.streamEntry(stream)])
        } catch {
            logger.error("disconnect clean-up failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
        }
    }

    /// A stream's member in its node's stream set (`reap` reads it back).
    private static func streamEntry(_ stream: PeerStream) -> String { "\(stream.user.id) \(stream.session)" }

    /// Runs the disconnect clean-up for one stream: unless a newer stream replaced it, the peer
    /// leaves every room, with `remove-peer` to the remaining members. Safe to repeat.
    private func endSession(_ session: String, of peer: PeerID) async throws {
        let rooms = try await scripts.run(.disconnect, keys: [keys.peer(peer), keys.peerRooms(peer)], arguments: [session])
        for room in rooms.array ?? [] {
            guard let room = room.string.flatMap(RoomID.init) else { continue }
            try await leaveRoom(room, peer: peer, tellLeaver: false)
        }
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
    /// member gets `add-peer` (offer: false) for it.
    public func join(_ user: PeerUser, room: RoomID) async throws -> JoinOutcome {
        let peer = user.id
        let (maxSize, maxRooms) = (String(limits.maxRoomSize), String(limits.maxRoomsPerPeer))
        // Refuse early what would be refused anyway, so members see no add-peer/remove-peer flicker.
        let checks = try await redis.pipeline([
            ["EXISTS", keys.peer(peer)], ["SCARD", keys.peerRooms(peer)], ["SISMEMBER", keys.peerRooms(peer), room.rawValue],
        ])
        guard checks[0].int == 1 else {
            metrics.joined("no_stream")
            throw NoOpenStream()
        }
        if limits.maxRoomsPerPeer > 0, checks[2].int == 0, (checks[1].int ?? 0) >= limits.maxRoomsPerPeer {
            metrics.refused("too_many_rooms")
            throw TooManyRooms()
        }
        // join.lua on the room's keys, then remember-room.lua on the peer's, in one round trip.
        // The join is recorded on the peer only while it still has a stream (and room to
        // spare); otherwise it is undone below, so no ghost stays behind.
        let replies = try await scripts.run([
            .init(.join, keys: [keys.roomMembers(room)], arguments: [room.rawValue, peer.rawValue, user.json, keys.channelPrefix, maxSize]),
            .init(.rememberRoom, keys: [keys.peer(peer), keys.peerRooms(peer)], arguments: [room.rawValue, maxRooms]),
        ])
        let members = replies[0].int ?? -1
        let recorded = replies[1].int ?? 0
        if members == -2 {
            // The room was full: join.lua changed nothing; take back what remember-room recorded.
            if recorded == 1, checks[2].int == 0 { try await redis.send(["SREM", keys.peerRooms(peer), room.rawValue]) }
            metrics.refused("room_full")
            throw RoomFull()
        }
        guard recorded == 1 else {
            if members >= 0 { try await leaveRoom(room, peer: peer, tellLeaver: false) }
            if recorded == -1 {
                metrics.refused("too_many_rooms")
                throw TooManyRooms()
            }
            metrics.joined("no_stream")
            throw NoOpenStream()
        }
        metrics.joined(members < 0 ? "already_member" : "joined")
        return members < 0 ? .alreadyMember : .joined(members: members)
    }

    /// Takes the peer out of the room: every remaining member gets `remove-peer` for it, and
    /// it gets `remove-peer` for each of them. Returns false if it was not a member.
    @discardableResult
    public func leave(_ user: PeerUser, room: RoomID) async throws -> Bool {
        let left = try await leaveRoom(room, peer: user.id, tellLeaver: true)
        metrics.left(left ? "left" : "not_member")
        return left
    }

    @discardableResult
    private func leaveRoom(_ room: RoomID, peer: PeerID, tellLeaver: Bool) async throws -> Bool {
        let told = try await scripts.run(
            .leave, keys: [keys.roomMembers(room)],
            arguments: [room.rawValue, peer.rawValue, keys.channelPrefix, tellLeaver ? "1" : "0"]
        ).int ?? -1
        try await redis.send(["SREM", keys.peerRooms(peer), room.rawValue])
        return told >= 0
    }

    // MARK: Relays

    public enum RelayOutcome: Sendable, Equatable {
        case delivered
        /// The peer has no open stream (never connected, or gone).
        case noSuchPeer
        /// The peer shares no room with the sender.
        case notInSharedRoom
        /// Redis knows the peer, but no node took the message: its node is gone.
        case peerUnreachable
    }

    /// Sends `event` with `{"peer": sender, "data": body}` to the peer's stream, if the two
    /// share a room. `body` must be compact JSON text (no newline).
    public func relay(from sender: PeerUser, to target: PeerID, event: EventName, body: String) async throws -> RelayOutcome {
        let payload = "\(event.rawValue)\n{\"peer\":\(sender.json),\"data\":\(body)}"
        let senderRooms = (try await redis.send(["SMEMBERS", keys.peerRooms(sender.id)]).array ?? []).compactMap(\.string)
        let receivers = try await scripts.run(
            .relay, keys: [keys.peer(target), keys.peerRooms(target)],
            arguments: [keys.channel(target), payload] + senderRooms
        ).int ?? -1
        let outcome: RelayOutcome = switch receivers {
        case -2: .notInSharedRoom
        case ..<0: .noSuchPeer
        case 0: .peerUnreachable
        default: .delivered
        }
        metrics.relayed("\(outcome)")
        return outcome
    }
}
