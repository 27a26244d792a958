import Coordinator
import Foundation
import HTTPServer
import Logging
import NIOCore
import Prometheus
import RedisClient
import RedisServer
import ServiceLifecycle
import SignalingClient
import Testing

/// Which Redis a fleet runs on.
enum RedisKind: String, Sendable, CaseIterable, CustomTestStringConvertible {
    /// One redis-server.
    case single
    /// A Redis Cluster of 3 primaries, each with a replica.
    case cluster

    var testDescription: String { rawValue }

    /// Starts a Redis of this kind for nodes run as processes, and stops it afterwards:
    /// `body` gets the flags that point a node at it, and a client of it.
    func withRedis<T>(_ body: (_ flags: [String], _ redis: RedisClient) async throws -> T) async throws -> T {
        switch self {
        case .single:
            let port = try RedisServerProcess.freePort()
            return try await RedisServerProcess.with(tcpPort: port) { server in
                let redis = RedisClient(endpoint: try RedisEndpoint(url: server.url))
                defer { Task { await redis.close() } }
                return try await body(["--redis", "redis://127.0.0.1:\(port)"], redis)
            }
        case .cluster:
            return try await RedisCluster.with { cluster in
                let redis = RedisClient(cluster: try RedisEndpoint.clusterSeeds(cluster.seeds))
                defer { Task { await redis.close() } }
                return try await body(["--redis-cluster", cluster.seeds], redis)
            }
        }
    }
}

extension RedisClient {
    /// Every key matching `pattern`, on every primary (`KEYS`: for tests only).
    func allKeys(_ pattern: String) async throws -> [String] {
        try await sendToEachPrimary(["KEYS", pattern]).flatMap { (try $0.get().array ?? []).compactMap(\.string) }.sorted()
    }
}

/// One redis-server (or a Redis Cluster) and several nodes on it, each a real HTTP server on a
/// loopback port, sharing one token secret: a fleet behind a load balancer, minus the load
/// balancer.
final class Fleet: Sendable {
    struct Node: Sendable {
        let id: String
        let port: Int
        let coordinator: Coordinator
        let group: ServiceGroup
        let task: Task<Void, Error>
    }

    static let secret = String(repeating: "test-secret-", count: 4)
    private enum Backend {
        case single(RedisServerProcess)
        case cluster(RedisCluster)
        /// A Redis the test runs itself (behind a proxy, say).
        case url(String)
    }

    private let backend: Backend
    let redis: RedisClient
    let nodes: [Node]

    /// The one redis-server, for tests that restart or kill it.
    var redisServer: RedisServerProcess {
        guard case .single(let server) = backend else { preconditionFailure("this fleet runs on a cluster") }
        return server
    }

    /// The cluster, for tests that fail it over or move its slots.
    var cluster: RedisCluster {
        guard case .cluster(let cluster) = backend else { preconditionFailure("this fleet runs on one redis-server") }
        return cluster
    }

    /// Every node on a free loopback port, with no rate limits (tests send in bursts).
    static let defaultConfiguration = NodeConfiguration(host: "127.0.0.1", port: 0, relayRate: 0, joinRate: 0)

    /// - Parameters:
    ///   - kind: the Redis the fleet starts for itself;
    ///   - redisURL: a Redis the test runs itself (behind a proxy, say), instead.
    static func with(
        nodes count: Int,
        on kind: RedisKind = .single,
        redisURL: String? = nil,
        configuration: NodeConfiguration = defaultConfiguration,
        limits: Coordinator.RoomLimits = .init(),
        streamLimits: PeerStream.Limits = .init(),
        gracePeriod: Duration = .zero,
        heartbeatInterval: Duration = .seconds(3),
        previousSecret: String? = nil,
        clusterNodeTimeout: Int = 15000,
        _ body: (Fleet) async throws -> Void
    ) async throws {
        func run(_ backend: Backend) async throws {
            let fleet = try await Fleet(
                backend: backend, nodes: count, configuration: configuration, limits: limits, streamLimits: streamLimits,
                gracePeriod: gracePeriod, heartbeatInterval: heartbeatInterval, previousSecret: previousSecret)
            do {
                try await body(fleet)
                await fleet.stop()
            } catch {
                await fleet.stop()
                throw error
            }
        }
        switch (kind, redisURL) {
        case (_, let url?): try await run(.url(url))
        case (.single, nil): try await RedisServerProcess.with { try await run(.single($0)) }
        case (.cluster, nil): try await RedisCluster.with(nodeTimeout: clusterNodeTimeout) { try await run(.cluster($0)) }
        }
    }

    private init(
        backend: Backend, nodes count: Int, configuration: NodeConfiguration, limits: Coordinator.RoomLimits,
        streamLimits: PeerStream.Limits, gracePeriod: Duration, heartbeatInterval: Duration, previousSecret: String?
    ) async throws {
        self.backend = backend
        let makeClient: (Logger, NodeMetrics?) throws -> RedisClient = { logger, metrics in
            switch backend {
            case .single(let server):
                RedisClient(endpoint: try RedisEndpoint(url: server.url), logger: logger, onConnectionEvent: metrics?.redisConnectionEvent)
            case .cluster(let cluster):
                RedisClient(cluster: try RedisEndpoint.clusterSeeds(cluster.seeds), logger: logger, onConnectionEvent: metrics?.redisConnectionEvent)
            case .url(let url):
                RedisClient(endpoint: try RedisEndpoint(url: url), logger: logger, onConnectionEvent: metrics?.redisConnectionEvent)
            }
        }
        redis = try makeClient(Logger(label: "test"), nil)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let tokens = try await TokenAuthority(secret: Self.secret, previousSecret: previousSecret)
        var nodes: [Node] = []
        for index in 0..<count {
            let id = "node-\(index)"
            let registry = PrometheusCollectorRegistry()
            let metrics = NodeMetrics(factory: PrometheusMetricsFactory(registry: registry))
            let coordinator = Coordinator(
                redis: try makeClient(logger, metrics),
                keys: try KeySpace(prefix: "sb:"), nodeID: id, streamLimits: streamLimits, heartbeatInterval: heartbeatInterval, gracePeriod: gracePeriod, limits: limits,
                metrics: metrics, logger: logger)
            let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
            let app = SignalingServer.makeApplication(
                coordinator: coordinator, tokens: tokens,
                configuration: configuration,
                metricsRegistry: registry,
                logger: logger,
                onServerRunning: { channel in portSink.yield(channel.localAddress?.port ?? 0) })
            // A node that cannot stop is a defect to see, not a run that hangs: past these
            // bounds the service group ends the process with a message saying which service.
            var groupConfiguration = ServiceGroupConfiguration(services: [coordinator, app], logger: logger)
            groupConfiguration.maximumGracefulShutdownDuration = .seconds(30)
            groupConfiguration.maximumCancellationDuration = .seconds(15)
            let group = ServiceGroup(configuration: groupConfiguration)
            let task = Task {
                defer { portSink.finish() }
                try await group.run()
            }
            var portIterator = ports.makeAsyncIterator()
            guard let port = await portIterator.next() else { throw NodeDidNotStart(id: id) }
            let connected = await withTaskGroup(of: Bool.self) { waiting in
                waiting.addTask { await coordinator.subscriber.waitUntilConnected(); return true }
                waiting.addTask { (try? await Task.sleep(for: .seconds(20))) == nil }
                defer { waiting.cancelAll() }
                return await waiting.next() ?? false
            }
            guard connected else { throw NodeDidNotStart(id: id) }
            nodes.append(Node(id: id, port: port, coordinator: coordinator, group: group, task: task))
        }
        self.nodes = nodes
    }

    struct NodeDidNotStart: Error, CustomStringConvertible {
        let id: String
        var description: String { "\(id) did not start serving, or its subscriber did not connect within 20 s" }
    }

    /// A client of one node. A stream it opens that receives nothing for 60 s (pings come every
    /// 10 s) is closed, so a test waiting for an event that never comes fails instead of hanging.
    func client(_ node: Int) -> SignalingClient { SignalingClient(port: nodes[node % nodes.count].port, idleTimeout: .seconds(60)) }

    func stop() async {
        for node in nodes.reversed() {
            await node.group.triggerGracefulShutdown()
            _ = try? await node.task.value
        }
        await redis.close()
    }

    /// Every key in Redis (on every primary).
    func keys(matching pattern: String = "*") async throws -> [String] {
        try await redis.allKeys(pattern)
    }

    /// Classic PUBLISH messages this cluster's nodes sent each other over the cluster bus
    /// (`cluster_stats_messages_publish_sent`, summed): each is copied to every node, which
    /// sharded pub/sub exists to avoid. 0 on one redis-server.
    func classicPublishesOnTheBus() async throws -> Int {
        guard case .cluster(let cluster) = backend else { return 0 }
        var sent = 0
        for server in cluster.servers where server.isRunning {
            for line in try await server.command("CLUSTER", "INFO").split(whereSeparator: \.isNewline)
            where line.hasPrefix("cluster_stats_messages_publish_sent:") {
                sent += Int(line.split(separator: ":")[1]) ?? 0
            }
        }
        return sent
    }

    /// Every peer and room key: all keys but the nodes' own (heartbeat records, the epoch)
    /// and the event logs (which expire by themselves).
    func signalingKeys() async throws -> [String] {
        try await keys().filter { !$0.hasPrefix("sb:node:") && !$0.hasPrefix("sb:{fleet}:") && !$0.hasSuffix(":log") }
    }

    /// Every peer and room key with its contents, to show that something changed nothing.
    func snapshot() async throws -> [String: String] {
        var result: [String: String] = [:]
        for key in try await signalingKeys() {
            let type = try await redis.send(["TYPE", key]).string ?? ""
            let value: RESPValue = switch type {
            case "hash": try await redis.send(["HGETALL", key])
            case "set": try await redis.send(["SMEMBERS", key])
            default: try await redis.send(["GET", key])
            }
            let parts = (value.array ?? [value]).compactMap(\.string)
            result[key] = type == "set" ? parts.sorted().joined(separator: ",") : parts.joined(separator: ",")
        }
        return result
    }

    func roomMembers(_ room: String) async throws -> Set<String> {
        Set((try await redis.send(["HKEYS", "sb:room:{\(room)}:members"]).array ?? []).compactMap(\.string))
    }

    /// Whether no node listens on the peer's channel any more: a closed stream leaves its
    /// node's count before its node has left the channel.
    func noOneListens(to peer: String) async throws -> Bool {
        let channel = try KeySpace(prefix: "sb:").channel(try #require(PeerID(peer)))
        return try await redis.send(["PUBSUB", "SHARDNUMSUB", channel]).array?[1].int == 0
    }

    /// Polls until `condition` holds (up to `seconds`); returns whether it did.
    func eventually(seconds: Double = 10, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }
}

/// A browser-like participant: its token, its id and its open stream.
struct Participant: Sendable {
    let name: String
    let token: String
    let id: String
    let stream: EventStream
    let node: Int

    /// With access off, its token is minted as an application's backend would (id = name).
    static func connect(_ name: String, fleet: Fleet, node: Int, access: AccessMode = .open) async throws -> Participant {
        let client = fleet.client(node)
        let token = try await Self.token(name, access: access, fleet: fleet)
        let stream = try await client.connect(token: token)
        guard let connected = await stream.next(), connected.event == "connected",
            let user = (json(connected.data)["user"] as? [String: Any]), let id = user["id"] as? String
        else { throw SignalingClientError.connectionClosed }
        return Participant(name: name, token: token, id: id, stream: stream, node: node)
    }
}

extension Participant {
    /// A token for a new peer: from `POST /access`, or with access off minted with the fleet's secret.
    static func token(_ name: String, access: AccessMode, fleet: Fleet) async throws -> String {
        switch access {
        case .open: try await fleet.client(0).access(username: name)
        case .off: try await TestTokens.mint(id: "\(name)-\(UUID().uuidString.prefix(8))", username: name, secret: Fleet.secret)
        }
    }
}

/// What differs between two `Fleet.snapshot()`s, one line per key, for failure messages.
func changes(from before: [String: String], to after: [String: String]) -> String {
    Set(before.keys).union(after.keys).sorted().compactMap { key in
        before[key] == after[key] ? nil : "\(key): \(before[key] ?? "(none)") -> \(after[key] ?? "(none)")"
    }.joined(separator: "; ")
}

/// Reads a stream's first event, `connected {"user": …}`, and returns the peer id in it ("" if
/// it is not there).
func connectedPeerID(_ stream: EventStream) async -> String {
    (json(await stream.next()?.data ?? "")["user"] as? [String: Any])?["id"] as? String ?? ""
}

func json(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
}

/// Reads the next non-ping event; nil if none comes within `seconds`.
func nextSignal(_ stream: EventStream, seconds: Double = 10) async -> ServerSentEvent? {
    await stream.nextSignal(timeout: .milliseconds(Int(seconds * 1000)))
}

/// A plain TCP socket connected to 127.0.0.1:`port`, for tests that speak raw HTTP; close it when
/// done, once.
func loopbackSocket(port: Int, receiveBuffer: Int32? = nil) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    if var receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receiveBuffer, socklen_t(MemoryLayout<Int32>.size)) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw SignalingClientError.connectionClosed
    }
    return fd
}
