import ArgumentParser
import Coordinator
import Foundation
import HTTPServer
import Logging
import Prometheus
import RedisClient
import RedisServer
import ServiceLifecycle

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a signaling node.",
        discussion: """
            Every option can also be set by the environment variable named in its help; the
            option wins. With no Redis URL, the node starts a private redis-server on a unix
            socket in a temporary directory and stops it on exit (a single-node set-up).
            """
    )

    @Option(help: "Address to listen on. (env: SWITCHBOARD_HOST, default: 127.0.0.1)")
    var host: String?

    @Option(help: "Port to listen on. (env: SWITCHBOARD_PORT, default: 8080)")
    var port: Int?

    @Option(help: ArgumentHelp(
        "Redis URL: redis://[:password@]host:port[/db] or unix:///path. (env: SWITCHBOARD_REDIS, default: an embedded redis-server)",
        valueName: "url"))
    var redis: String?

    @Option(help: ArgumentHelp(
        "Seed nodes of a Redis Cluster: HOST:PORT[,HOST:PORT…], each also redis://[user:password@]host:port; the node learns the others from them. Not with --redis. (env: SWITCHBOARD_REDIS_CLUSTER)",
        valueName: "seeds"))
    var redisCluster: String?

    @Option(help: "This node's id, unique in the fleet. (env: SWITCHBOARD_NODE_ID, default: hostname-pid)")
    var nodeId: String?

    @Option(help: ArgumentHelp(
        "HS256 secret for tokens, at least 32 bytes; share it across the fleet. (env: SWITCHBOARD_TOKEN_SECRET, default: random, single node only)",
        valueName: "secret"))
    var tokenSecret: String?

    @Option(help: ArgumentHelp(
        "The secret tokens were signed with before --token-secret: they still verify until they expire, while a fleet rotates its secret. New tokens are signed with --token-secret only. (env: SWITCHBOARD_PREVIOUS_TOKEN_SECRET)",
        valueName: "secret"))
    var previousTokenSecret: String?

    @Option(help: ArgumentHelp(
        "open: POST /access hands a token to anyone (the demo, the original article's client); off: it answers 404 and tokens come from the application's backend. (env: SWITCHBOARD_ACCESS, default: open)",
        valueName: "open|off"))
    var access: String?

    @Option(help: "Prefix of every Redis key and channel. (env: SWITCHBOARD_KEY_PREFIX, default: sb:)")
    var keyPrefix: String?

    @Option(help: ArgumentHelp("Seconds between pings on a stream. (env: SWITCHBOARD_PING_INTERVAL, default: 10)", valueName: "seconds"))
    var pingInterval: Double?

    @Option(help: ArgumentHelp(
        "Seconds between heartbeats; a node silent for 3 heartbeats is dead and the others remove its peers. (env: SWITCHBOARD_HEARTBEAT_INTERVAL, default: 3)",
        valueName: "seconds"))
    var heartbeatInterval: Double?

    @Option(help: ArgumentHelp(
        "Seconds a peer whose stream dropped keeps its rooms, for its client to resume with Last-Event-ID; 0 removes it at once. (env: SWITCHBOARD_GRACE_PERIOD, default: 10)",
        valueName: "seconds"))
    var gracePeriod: Double?

    @Option(help: "Most members in one room. (env: SWITCHBOARD_MAX_ROOM_SIZE, default: 100)")
    var maxRoomSize: Int?

    @Option(help: "Most rooms one peer may be in. (env: SWITCHBOARD_MAX_ROOMS_PER_PEER, default: 16)")
    var maxRoomsPerPeer: Int?

    @Option(help: ArgumentHelp("Relays per second one peer may send to a node, bursts of twice that; 0 for no limit. (env: SWITCHBOARD_RELAY_RATE, default: 100)", valueName: "per-second"))
    var relayRate: Double?

    @Option(help: ArgumentHelp("Joins per second one peer may make on a node, bursts of twice that; 0 for no limit. (env: SWITCHBOARD_JOIN_RATE, default: 10)", valueName: "per-second"))
    var joinRate: Double?

    @Option(help: ArgumentHelp(
        "Comma-separated origins allowed to call the API from a browser, or *. (env: SWITCHBOARD_ALLOWED_ORIGINS, default: *)",
        valueName: "origins"))
    var allowedOrigins: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical. (env: SWITCHBOARD_LOG_LEVEL, default: info)")
    var logLevel: String?

    func run() async throws {
        raiseFileLimit()
        let environment = ProcessInfo.processInfo.environment
        func setting(_ value: String?, _ variable: String) -> String? { value ?? environment[variable] }
        func number<T: LosslessStringConvertible>(_ value: T?, _ variable: String, _ fallback: T) throws -> T {
            if let value { return value }
            guard let text = environment[variable] else { return fallback }
            guard let parsed = T(text) else { throw ValidationError("\(variable)='\(text)' is not a number") }
            return parsed
        }

        let levelName = setting(logLevel, "SWITCHBOARD_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelName) else { throw ValidationError("unknown log level '\(levelName)'") }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "switchboard")

        let ping = try number(pingInterval, "SWITCHBOARD_PING_INTERVAL", 10.0)
        guard ping > 0 else { throw ValidationError("ping interval must be positive") }
        let relays = try number(relayRate, "SWITCHBOARD_RELAY_RATE", 100.0)
        let joins = try number(joinRate, "SWITCHBOARD_JOIN_RATE", 10.0)
        guard relays >= 0, joins >= 0 else { throw ValidationError("rates cannot be negative") }
        let accessName = setting(access, "SWITCHBOARD_ACCESS") ?? "open"
        guard let accessMode = AccessMode(rawValue: accessName) else { throw ValidationError("--access must be open or off, not '\(accessName)'") }
        let node = NodeConfiguration(
            host: setting(host, "SWITCHBOARD_HOST") ?? "127.0.0.1",
            port: try number(port, "SWITCHBOARD_PORT", 8080),
            pingInterval: .milliseconds(Int64(ping * 1000)),
            allowedOrigins: (setting(allowedOrigins, "SWITCHBOARD_ALLOWED_ORIGINS") ?? "*")
                .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) },
            relayRate: relays, relayBurst: relays * 2, joinRate: joins, joinBurst: joins * 2,
            access: accessMode
        )
        let limits = Coordinator.RoomLimits(
            maxRoomSize: try number(maxRoomSize, "SWITCHBOARD_MAX_ROOM_SIZE", 100),
            maxRoomsPerPeer: try number(maxRoomsPerPeer, "SWITCHBOARD_MAX_ROOMS_PER_PEER", 16))
        guard limits.maxRoomSize >= 2, limits.maxRoomsPerPeer >= 1 else {
            throw ValidationError("a room holds at least 2 peers and a peer may be in at least 1 room")
        }
        let keys: KeySpace
        do { keys = try KeySpace(prefix: setting(keyPrefix, "SWITCHBOARD_KEY_PREFIX") ?? "sb:") } catch {
            throw ValidationError("\(error)")
        }
        let nodeID = setting(nodeId, "SWITCHBOARD_NODE_ID")
            ?? "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
        guard PeerID(nodeID) != nil else { throw ValidationError("node id '\(nodeID)': use \(identifierRule)") }

        let secret: String
        if let given = setting(tokenSecret, "SWITCHBOARD_TOKEN_SECRET") {
            secret = given
        } else {
            secret = TokenAuthority.randomSecret()
            logger.warning("no token secret given: using a random one, so tokens verify on this node only (set SWITCHBOARD_TOKEN_SECRET for a fleet)")
        }
        let tokens: TokenAuthority
        do {
            tokens = try await TokenAuthority(secret: secret, previousSecret: setting(previousTokenSecret, "SWITCHBOARD_PREVIOUS_TOKEN_SECRET"))
        } catch {
            throw ValidationError("\(error)")
        }

        var services: [any Service] = []
        let registry = PrometheusCollectorRegistry()
        let metrics = NodeMetrics(factory: PrometheusMetricsFactory(registry: registry))
        let redisLogger = Logger(label: "switchboard.redis")
        let redisClient: RedisClient
        switch (setting(redis, "SWITCHBOARD_REDIS"), setting(redisCluster, "SWITCHBOARD_REDIS_CLUSTER")) {
        case (.some, .some):
            throw ValidationError("give either a Redis URL (--redis) or a Redis Cluster's seeds (--redis-cluster), not both")
        case (let url?, nil):
            let endpoint: RedisEndpoint
            do { endpoint = try RedisEndpoint(url: url) } catch { throw ValidationError("\(error)") }
            redisClient = RedisClient(endpoint: endpoint, logger: redisLogger, onConnectionEvent: metrics.redisConnectionEvent)
        case (nil, let seeds?):
            let endpoints: [RedisEndpoint]
            do { endpoints = try RedisEndpoint.clusterSeeds(seeds) } catch { throw ValidationError("\(error)") }
            redisClient = RedisClient(cluster: endpoints, logger: redisLogger, onConnectionEvent: metrics.redisConnectionEvent)
        case (nil, nil):
            let embedded = try await RedisServerProcess.start()
            logger.info("started embedded redis-server", metadata: ["redis": "\(embedded.url)"])
            services.append(EmbeddedRedisService(server: embedded))
            redisClient = RedisClient(
                endpoint: try RedisEndpoint(url: embedded.url), logger: redisLogger, onConnectionEvent: metrics.redisConnectionEvent)
        }
        let heartbeat = try number(heartbeatInterval, "SWITCHBOARD_HEARTBEAT_INTERVAL", 3.0)
        guard heartbeat >= 0.1 else { throw ValidationError("heartbeat interval must be at least 0.1 s") }
        let grace = try number(gracePeriod, "SWITCHBOARD_GRACE_PERIOD", 10.0)
        guard grace >= 0 else { throw ValidationError("grace period must be 0 or more seconds") }
        let coordinator = Coordinator(
            redis: redisClient, keys: keys, nodeID: nodeID, heartbeatInterval: .milliseconds(Int64(heartbeat * 1000)),
            gracePeriod: .milliseconds(Int64(grace * 1000)), limits: limits, metrics: metrics)
        let app = SignalingServer.makeApplication(
            coordinator: coordinator, tokens: tokens, configuration: node, metricsRegistry: registry)
        logger.info("switchboard node starting", metadata: [
            "node": "\(nodeID)", "listen": "\(node.host):\(node.port)", "redis": "\(redisClient.description)", "access": "\(accessMode.rawValue)",
        ])
        // Services stop in reverse order: HTTP first (streams clean up through the coordinator),
        // then the coordinator, then the embedded Redis.
        services += [coordinator, app]
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        await redisClient.close()
    }
}

/// Every stream is a socket: lift the soft limit on open files to the hard one.
func raiseFileLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

/// Stops the embedded redis-server when the node shuts down.
struct EmbeddedRedisService: Service {
    let server: RedisServerProcess

    func run() async throws {
        try? await gracefulShutdown()
        await server.stop()
    }
}
