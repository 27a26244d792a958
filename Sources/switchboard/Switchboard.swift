import ArgumentParser

@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "WebRTC signaling over Server-Sent Events, coordinated through Redis.",
        subcommands: [Serve.self, Token.self, TryCluster.self],
        defaultSubcommand: Serve.self
    )
}
