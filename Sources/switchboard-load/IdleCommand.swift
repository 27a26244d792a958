import ArgumentParser
import Foundation
import RedisClient
import SignalingClient

struct IdleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle",
        abstract: "Open C streams and hold them: node memory per stream and Redis connections.")

    @OptionGroup var options: FleetOptions
    @Option(help: "Streams to open, spread over the nodes.") var streams = 1000
    @Option(help: "Seconds to hold them before measuring.") var hold = 5.0
    @Option(name: .customLong("pid"), help: "A node's process id, to read its memory (repeat per node).") var pids: [Int32] = []
    @Option(help: "Redis URL, to read connected_clients.") var redis: String?
    @Option(help: "The node's ping interval in seconds (its SWITCHBOARD_PING_INTERVAL): the node CPU of the hold is then also given per ping round to every stream.")
    var pingInterval: Double?
    @Flag(help: "Open each stream on the keep-alive connection that fetched its token (POST /access), as a page does, rather than on a fresh one.")
    var afterAccess = false
    @Flag(help: "Instead of streams, hold plain keep-alive HTTP connections that each made one GET /healthz: the HTTP stack's own cost per connection, the ceiling for a stream.")
    var plainHTTP = false

    func run() async throws {
        let nodes = try options.fleet()
        raiseFileLimit()
        let redisClient = try redis.map { RedisClient(endpoint: try RedisEndpoint(url: $0)) }
        let rssBefore = pids.compactMap(residentKiB).reduce(0, +)
        let clientsBefore = try await connectedClients(redisClient)
        let progress = Progress()
        progress.start("idle")
        progress.update("opening \(streams) streams")
        let start = monotonicNanoseconds()
        let held: [@Sendable () async -> Void]
        if plainHTTP {
            let connections = try await Self.openPlainConnections(streams, nodes: nodes)
            held = connections.map { connection in { await connection.close() } }
        } else {
            let peers = try await Peer.connectMany(streams, nodes: nodes, prefix: "idle", reusing: afterAccess)
            held = peers.map { peer in { peer.stream.close() } }
        }
        let openSeconds = Double(monotonicNanoseconds() - start) / 1e9
        progress.update("holding \(streams) \(plainHTTP ? "connections" : "streams")")
        let cpuBefore = pids.map(CostMeter.cpuNanoseconds).reduce(0, +)
        try await Task.sleep(for: .milliseconds(Int(hold * 1000)))
        let holdCPUms = Double(pids.map(CostMeter.cpuNanoseconds).reduce(0, +) - cpuBefore) / 1e6
        let rssAfter = pids.compactMap(residentKiB).reduce(0, +)
        let clientsAfter = try await connectedClients(redisClient)
        progress.stop()
        for close in held { await close() }
        let what = plainHTTP ? "plain HTTP connections" : afterAccess ? "streams after POST /access" : "streams"
        var report = Report(
            title: "idle: \(streams) \(what) over \(nodes.count) node(s), held \(Int(hold)) s",
            columns: [
                "held", "open_s", "node_rss_before_mib", "node_rss_after_mib", "kib_each", "hold_cpu_ms", "ping_round_ms",
                "redis_clients_before", "redis_clients_after",
            ])
        report.rows.append([
            "held": "\(streams) \(what)", "open_s": openSeconds,
            "node_rss_before_mib": pids.isEmpty ? "-" : String(format: "%.1f", Double(rssBefore) / 1024),
            "node_rss_after_mib": pids.isEmpty ? "-" : String(format: "%.1f", Double(rssAfter) / 1024),
            "kib_each": pids.isEmpty ? "-" : String(format: "%.2f", Double(rssAfter - rssBefore) / Double(streams)),
            "hold_cpu_ms": pids.isEmpty ? "-" : String(format: "%.1f", holdCPUms),
            // The hold's CPU, all of it counted as pings (the node's heartbeats are a few commands).
            "ping_round_ms": pingInterval.map { pids.isEmpty || $0 <= 0 ? "-" : String(format: "%.2f", holdCPUms / (hold / $0)) } ?? "-",
            "redis_clients_before": clientsBefore.map(String.init) ?? "-",
            "redis_clients_after": clientsAfter.map(String.init) ?? "-",
        ])
        report.print(json: options.json)
        await redisClient?.close()
    }

    private static func openPlainConnections(_ count: Int, nodes: [NodeAddress]) async throws -> [PersistentConnection] {
        var connections: [PersistentConnection] = []
        for index in 0..<count {
            let node = nodes[index % nodes.count]
            let connection = try await PersistentConnection.connect(host: node.host, port: node.port)
            _ = try await connection.request(.GET, "/healthz")
            connections.append(connection)
        }
        return connections
    }

    private func connectedClients(_ client: RedisClient?) async throws -> Int? {
        guard let client else { return nil }
        let info = try await client.send(["INFO", "clients"]).string ?? ""
        return info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("connected_clients:") }
            .flatMap { Int($0.dropFirst("connected_clients:".count)) }
    }
}

/// Resident memory of a process in KiB, from /proc.
func residentKiB(_ pid: Int32) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
    else { return nil }
    return Int(line.split(separator: " ").dropFirst().first ?? "")
}

/// Many streams need many file descriptors: lift the soft limit to the hard one.
func raiseFileLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}
