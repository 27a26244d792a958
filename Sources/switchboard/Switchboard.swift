import ArgumentParser
import NIOCore
import NIOPosix

@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "WebRTC signaling over Server-Sent Events, coordinated through Redis.",
        subcommands: [Serve.self, Token.self, TryCluster.self],
        defaultSubcommand: Serve.self
    )

    /// Swift concurrency's jobs run on NIO's event loops rather than a pool of their own: a
    /// request's handler, the coordinator's awaits and the sockets they write to then share
    /// threads, where before every await on a channel was a hop between two threads and a
    /// wake-up of the other (measured: Benchmarks/versus-original.sh). Nothing in the node
    /// blocks a thread, which is what this asks of every task.
    static func main() async {
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        await main(nil)
    }
}
