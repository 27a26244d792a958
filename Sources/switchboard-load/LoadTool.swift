import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

@main
struct LoadTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard-load",
        abstract: "Load and correctness tests over the public HTTP API of any server speaking it.",
        discussion: """
            Speaks only the HTTP API (POST /access, GET /connect, POST /:room/join, /leave,
            /relay), so it drives Switchboard or the original Express + Redis server alike.
            Give every node of the fleet with --node; clients are spread over them.
            """,
        subcommands: [StormCommand.self, RelayCommand.self, JoinCommand.self, ChurnCommand.self, IdleCommand.self]
    )

    /// Tasks run on NIO's event loops, as in the node: the tool's sockets and the tasks that
    /// read them then share threads, where a pool of their own cost a hop between two threads
    /// per message (the tool spent 110 µs of CPU per closed-loop relay, more than a node did,
    /// and on a shared machine its CPU is the nodes' ceiling). Nothing in the tool blocks a
    /// thread.
    static func main() async {
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        await main(nil)
    }
}

/// Options every mode shares.
struct FleetOptions: ParsableArguments {
    @Option(name: .customLong("node"), help: ArgumentHelp("A node's base URL; repeat for several nodes.", valueName: "url"))
    var nodes: [String] = ["http://127.0.0.1:8080"]

    @Flag(help: "Print the results as JSON instead of a table.")
    var json = false

    func fleet() throws -> [NodeAddress] {
        try nodes.map { url in
            guard let address = NodeAddress(url: url) else { throw ValidationError("not an http://host:port URL: \(url)") }
            return address
        }
    }
}

struct NodeAddress: Sendable, CustomStringConvertible {
    let host: String
    let port: Int

    init?(url: String) {
        guard url.hasPrefix("http://") else { return nil }
        let rest = url.dropFirst("http://".count).split(separator: "/").first ?? ""
        let parts = rest.split(separator: ":")
        guard parts.count <= 2, let host = parts.first, !host.isEmpty else { return nil }
        self.host = String(host)
        self.port = parts.count == 2 ? Int(parts[1]) ?? -1 : 80
        guard (1...65535).contains(port) else { return nil }
    }

    var description: String { "http://\(host):\(port)" }
}
