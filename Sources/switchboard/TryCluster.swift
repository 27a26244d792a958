import ArgumentParser
import Foundation
import HTTPServer
import RedisServer
import UnixSignals

/// A fleet on a Redis Cluster to try out on one machine: a private cluster of three shards
/// (each primary with a replica) in temporary directories, and nodes on it; Ctrl-C stops
/// everything it started.
struct TryCluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Try a fleet on Redis Cluster: a private 3-shard cluster and two nodes on it.",
        discussion: """
            The nodes listen on consecutive ports from --port and share a random token secret;
            open the demo page on each. Ctrl-C stops the nodes and the cluster, and removes its
            directories.
            """
    )

    @Option(help: "The first node's port; the others follow it.")
    var port: Int = 8080

    @Option(help: "How many nodes.")
    var nodes: Int = 2

    @Option(help: "How many shards (primaries, each with a replica).")
    var shards: Int = 3

    func run() async throws {
        guard (1...16).contains(nodes), (1...8).contains(shards) else { throw ValidationError("1 to 16 nodes, 1 to 8 shards") }
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        print("starting a Redis Cluster of \(shards) primaries, each with a replica …")
        let cluster = try await RedisCluster.start(primaries: shards, replicasPerPrimary: 1)
        print("cluster ready: \(cluster.seeds)")
        var environment = ProcessInfo.processInfo.environment
        environment["SWITCHBOARD_TOKEN_SECRET"] = TokenAuthority.randomSecret()
        var children: [Process] = []
        for index in 0..<nodes {
            let child = Process()
            child.executableURL = URL(fileURLWithPath: Bundle.main.executablePath ?? CommandLine.arguments[0])
            child.arguments = ["serve", "--port", String(port + index), "--node-id", "node-\(index)", "--redis-cluster", cluster.seeds]
            child.environment = environment
            do { try child.run() } catch {
                for started in children { started.terminate() }
                await cluster.stop()
                throw error
            }
            children.append(child)
            print("node-\(index): http://127.0.0.1:\(port + index)/")
        }
        print("Ctrl-C stops the nodes and the cluster.")
        for await _ in signals { break }
        for child in children where child.isRunning { child.terminate() }
        for child in children { await child.exited() }
        await cluster.stop()
        print("stopped")
    }
}
