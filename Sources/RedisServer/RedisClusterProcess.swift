import Foundation

/// A private Redis Cluster for tests and trying things out: `primaries` redis-servers with
/// `replicasPerPrimary` replicas each, on free loopback ports, each in its own temporary
/// directory, joined with `redis-cli --cluster create`. Persistence is off.
public final class RedisCluster: Sendable {
    /// Every server, primaries first as `redis-cli` assigned them (it may reassign on failover).
    public let servers: [RedisServerProcess]
    public let replicasPerPrimary: Int

    public struct FailedToForm: Error, CustomStringConvertible {
        public let why: String
        public var description: String { "the Redis Cluster did not form: \(why)" }
    }

    /// Starts the servers, joins them, and returns once every node reports `cluster_state:ok`
    /// and every replica is linked to its primary.
    /// - Parameter nodeTimeout: `cluster-node-timeout` in ms: how long a primary may be
    ///   unreachable before its replica takes over. Short only where a test fails one over: on
    ///   a busy machine a short one starts failovers nobody asked for.
    public static func start(primaries: Int = 3, replicasPerPrimary: Int = 1, nodeTimeout: Int = 15000) async throws -> RedisCluster {
        var servers: [RedisServerProcess] = []
        do {
            for _ in 0..<(primaries * (1 + replicasPerPrimary)) {
                servers.append(try await startServer(nodeTimeout: nodeTimeout))
            }
            let cluster = RedisCluster(servers: servers, replicasPerPrimary: replicasPerPrimary)
            try await cluster.create()
            return cluster
        } catch {
            for server in servers { await server.stop() }
            throw error
        }
    }

    /// Runs `body` with a fresh cluster and stops it afterwards, whatever happens.
    public static func with<T>(
        primaries: Int = 3, replicasPerPrimary: Int = 1, nodeTimeout: Int = 15000, _ body: (RedisCluster) async throws -> T
    ) async throws -> T {
        let cluster = try await start(primaries: primaries, replicasPerPrimary: replicasPerPrimary, nodeTimeout: nodeTimeout)
        do {
            let result = try await body(cluster)
            await cluster.stop()
            return result
        } catch {
            await cluster.stop()
            throw error
        }
    }

    private init(servers: [RedisServerProcess], replicasPerPrimary: Int) {
        self.servers = servers
        self.replicasPerPrimary = replicasPerPrimary
    }

    /// `127.0.0.1:P1,127.0.0.1:P2,…`, for `--redis-cluster` and `RedisEndpoint.clusterSeeds`.
    public var seeds: String { servers.compactMap(\.tcpPort).map { "127.0.0.1:\($0)" }.joined(separator: ",") }

    /// Stops every server and removes their directories.
    public func stop() async {
        for server in servers { await server.stop() }
    }

    private func create() async throws {
        let primaryCount = servers.count / (1 + replicasPerPrimary)
        if primaryCount >= 3 { try await createWithRedisCLI() } else { try await createByHand(primaries: primaryCount) }
        // Ready when every node sees the whole cluster, and every replica its primary.
        for _ in 0..<400 {
            if try await isFormed() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw FailedToForm(why: "not every node reported cluster_state:ok within 20 s")
    }

    /// `redis-cli --cluster create`, which wants at least three primaries.
    private func createWithRedisCLI() async throws {
        guard let cli = RedisServerProcess.findExecutable("redis-cli") else { throw FailedToForm(why: "redis-cli not found on PATH") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: cli)
        process.arguments = ["--cluster", "create"] + servers.compactMap(\.tcpPort).map { "127.0.0.1:\($0)" }
            + ["--cluster-replicas", String(replicasPerPrimary), "--cluster-yes"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        let log = try await process.runToEnd(reading: output)
        guard process.terminationStatus == 0 else { throw FailedToForm(why: log) }
    }

    /// One or two primaries (a baseline to compare with): the slots split between them, each
    /// node introduced to the first, each replica attached to its primary.
    private func createByHand(primaries count: Int) async throws {
        let (primaries, replicas) = (Array(servers.prefix(count)), Array(servers.dropFirst(count)))
        for (index, primary) in primaries.enumerated() {
            let (first, last) = (index * Self.slotCount / count, (index + 1) * Self.slotCount / count - 1)
            try await primary.command("CLUSTER", "SET-CONFIG-EPOCH", String(index + 1))
            try await primary.command("CLUSTER", "ADDSLOTSRANGE", String(first), String(last))
        }
        guard let port = servers[0].tcpPort else { return }
        for server in servers.dropFirst() { try await server.command("CLUSTER", "MEET", "127.0.0.1", String(port)) }
        for (index, replica) in replicas.enumerated() {
            let primaryID = try await nodeID(of: primaries[index % count])
            // It must know the primary first: MEET takes a moment to spread.
            for _ in 0..<200 where !(try await replica.command("CLUSTER", "NODES").contains(primaryID)) {
                try await Task.sleep(for: .milliseconds(50))
            }
            let reply = try await replica.command("CLUSTER", "REPLICATE", primaryID)
            guard reply.hasPrefix("OK") else { throw FailedToForm(why: "CLUSTER REPLICATE answered \(reply)") }
        }
    }

    private static let slotCount = 16384  // Redis Cluster's hash slots

    private func isFormed() async throws -> Bool {
        for server in servers where server.isRunning {
            guard try await server.command("CLUSTER", "INFO").contains("cluster_state:ok") else { return false }
            let replication = try await server.command("INFO", "replication")
            if replication.contains("role:slave"), !replication.contains("master_link_status:up") { return false }
        }
        return true
    }

    /// Waits until every running node reports `cluster_state:ok` again (after a failover or a
    /// restart); false if that takes longer than `timeout`.
    public func waitUntilHealthy(timeout: Duration = .seconds(30)) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await isFormed() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// The server listening on `port`.
    public func server(port: Int) -> RedisServerProcess? { servers.first { $0.tcpPort == port } }

    /// The cluster's id of a server (`CLUSTER MYID`).
    public func nodeID(of server: RedisServerProcess) async throws -> String {
        try await server.command("CLUSTER", "MYID").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The running primaries, as the servers themselves say now (a failover changes them).
    public func primaries() async throws -> [RedisServerProcess] {
        var primaries: [RedisServerProcess] = []
        for server in servers where server.isRunning {
            if try await server.command("ROLE").hasPrefix("master") { primaries.append(server) }
        }
        return primaries
    }

    /// The primary serving `slot` now, as `CLUSTER NODES` on a running server says.
    public func owner(ofSlot slot: Int) async throws -> RedisServerProcess? {
        guard let any = servers.first(where: \.isRunning) else { return nil }
        for line in try await any.command("CLUSTER", "NODES").split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 8, fields[2].contains("master"), !fields[2].contains("fail"),
                let port = fields[1].split(separator: ":").last?.split(separator: "@").first.flatMap({ Int($0) })
            else { continue }
            for range in fields[8...] where !range.hasPrefix("[") {
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                if let low = bounds.first, (low...(bounds.last ?? low)).contains(slot) { return server(port: port) }
            }
        }
        return nil
    }

    /// The running replica of `primary`, as the replicas say (`ROLE`).
    public func replica(of primary: RedisServerProcess) async throws -> RedisServerProcess? {
        guard let port = primary.tcpPort else { return nil }
        for server in servers where server.isRunning && server !== primary {
            let role = try await server.command("ROLE").split(separator: "\n")
            if role.first == "slave", role.count > 2, Int(role[2]) == port { return server }
        }
        return nil
    }

    /// How a primary gives way to its replica.
    public enum Failover: String, Sendable, CaseIterable {
        /// `CLUSTER FAILOVER` on the replica: the two agree, nothing is lost.
        case manual
        /// The primary is killed with SIGKILL; its replica takes over after `cluster-node-timeout`.
        case kill
    }

    /// Fails `primary` over to its replica and returns the replica once it serves the slots and
    /// every running node reports `cluster_state:ok`.
    public func failOver(_ primary: RedisServerProcess, _ how: Failover, timeout: Duration = .seconds(30)) async throws -> RedisServerProcess {
        guard let replica = try await replica(of: primary) else { throw FailedToForm(why: "\(primary.tcpPort ?? 0) has no replica") }
        let deadline = ContinuousClock.now + timeout
        switch how {
        case .manual:
            // A primary answers a manual failover only from a node it knows as its replica, which
            // a primary that just took over learns by gossip a moment later; until then the
            // request times out (after 5 s) and changes nothing.
            let primaryID = try await nodeID(of: primary), replicaID = try await nodeID(of: replica)
            while ContinuousClock.now < deadline, !(try await primary.command("CLUSTER", "REPLICAS", primaryID).contains(replicaID)) {
                try await Task.sleep(for: .milliseconds(50))
            }
            try await replica.command("CLUSTER", "FAILOVER")
        case .kill: await primary.kill()
        }
        while ContinuousClock.now < deadline {
            if try await replica.command("ROLE").hasPrefix("master"), try await waitUntilHealthy(timeout: .milliseconds(100)) { return replica }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw FailedToForm(why: "the replica of \(primary.tcpPort ?? 0) did not take over within \(timeout)")
    }

    /// A slot on its way from one primary to another, as `redis-cli --cluster reshard` moves
    /// one: IMPORTING on the target, MIGRATING on the source, keys moved with MIGRATE, then the
    /// new owner given to every primary.
    public struct SlotMigration: Sendable {
        public let slot: Int
        public let source: RedisServerProcess
        public let target: RedisServerProcess
        let sourceID: String
        let targetID: String
        let cluster: RedisCluster

        /// Moves up to `count` of the keys still on the source (all of them if nil).
        public func moveKeys(_ count: Int? = nil) async throws {
            let listed = try await source.command("CLUSTER", "GETKEYSINSLOT", String(slot), String(count ?? 100_000))
            let keys = listed.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
            guard !keys.isEmpty, let port = target.tcpPort else { return }
            let reply = try await source.command(["MIGRATE", "127.0.0.1", String(port), "", "0", "5000", "KEYS"] + keys)
            guard reply.hasPrefix("OK") else { throw FailedToForm(why: "MIGRATE answered \(reply)") }
        }

        /// Moves the remaining keys and gives the slot to the target, on every primary.
        public func finish() async throws {
            try await moveKeys()
            try await target.command("CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
            try await source.command("CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
            for primary in try await cluster.primaries() where primary !== source && primary !== target {
                try await primary.command("CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
            }
        }
    }

    /// Starts moving `slot` to `target` (a primary that does not own it).
    public func beginMigration(ofSlot slot: Int, to target: RedisServerProcess) async throws -> SlotMigration {
        guard let source = try await owner(ofSlot: slot) else { throw FailedToForm(why: "no primary serves slot \(slot)") }
        let migration = SlotMigration(
            slot: slot, source: source, target: target, sourceID: try await nodeID(of: source), targetID: try await nodeID(of: target),
            cluster: self)
        try await target.command("CLUSTER", "SETSLOT", String(slot), "IMPORTING", migration.sourceID)
        try await source.command("CLUSTER", "SETSLOT", String(slot), "MIGRATING", migration.targetID)
        return migration
    }

    /// A free loopback port whose cluster bus port (port + 10000) is free too.
    /// One cluster-enabled server on a free port (and the bus port 10000 above it). A port found
    /// free may be taken before the server binds it (every outgoing connection on the machine
    /// draws from the same range): then another is tried.
    private static func startServer(nodeTimeout: Int) async throws -> RedisServerProcess {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await RedisServerProcess.start(
                    tcpPort: try freeClusterPort(),
                    extraArguments: [
                        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", String(nodeTimeout),
                        // One shard down must not stop the others (and a failover test checks them).
                        "--cluster-require-full-coverage", "no",
                        // A replica's first sync starts at once, not after the 5 s Redis waits
                        // for more replicas to share it.
                        "--repl-diskless-sync-delay", "0",
                    ])
            } catch let error as RedisServerProcess.FailedToStart where attempt < 5 && error.log.contains("Address already in use") {
                continue
            }
        }
    }

    static func freeClusterPort() throws -> Int {
        for _ in 0..<100 {
            let port = try RedisServerProcess.freePort()
            guard port + 10000 <= 65535, RedisServerProcess.isFree(port: port + 10000) else { continue }
            return port
        }
        throw POSIXError(.EADDRINUSE)
    }
}
