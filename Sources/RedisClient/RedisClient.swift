import Logging
import NIOCore
import NIOPosix

/// Switchboard's Redis: one server, or a Redis Cluster. Commands go to the server, or on a
/// cluster to the primary owning their key's slot (see `ClusterRouter`); everything above this
/// type is the same in both cases. Connections come back by themselves, and while Redis is
/// unreachable commands fail at once with `RedisConnectionError`, so callers can answer 503.
public final class RedisClient: Sendable {
    private enum Mode {
        case single(RedisServerClient)
        case cluster(ClusterRouter)
    }

    private let mode: Mode
    private let identities = IdentityObserver()

    /// How a batch of commands may be sent.
    public enum Order: Sendable {
        /// The commands are independent: on a cluster they are split by primary and sent to
        /// all of them at once.
        case independent
        /// Each command runs after the one before it, across slots too (on a cluster, each
        /// waits for the previous reply).
        case inOrder
    }

    /// A client of one Redis server.
    public init(
        endpoint: RedisEndpoint,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        commandTimeout: TimeAmount = .seconds(5),
        logger: Logger = Logger(label: "redis"),
        onConnectionEvent: (@Sendable (RedisConnectionEvent) -> Void)? = nil
    ) {
        mode = .single(
            RedisServerClient(
                endpoint: endpoint, group: group, commandTimeout: commandTimeout, logger: logger, onConnectionEvent: onConnectionEvent,
                identityObserver: identities))
    }

    /// A client of the Redis Cluster these seed nodes belong to; it learns the other nodes from
    /// them, and uses the seeds' credentials on every node.
    public init(
        cluster seeds: [RedisEndpoint],
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        commandTimeout: TimeAmount = .seconds(5),
        logger: Logger = Logger(label: "redis"),
        onConnectionEvent: (@Sendable (RedisConnectionEvent) -> Void)? = nil
    ) {
        mode = .cluster(
            ClusterRouter(
                seeds: seeds, group: group, commandTimeout: commandTimeout, logger: logger, onConnectionEvent: onConnectionEvent,
                identityObserver: identities))
    }

    /// Calls `handler` each time a command connection opens, with the server's identity, before
    /// any command runs on it: a changed identity means the server may have lost writes.
    public func observeServers(_ handler: @escaping @Sendable (RedisEndpoint, ServerIdentity) -> Void) {
        identities.set(handler)
    }

    public var isCluster: Bool {
        if case .cluster = mode { return true }
        return false
    }

    /// The server, or the cluster's seeds, for logs.
    public var description: String {
        switch mode {
        case .single(let server): "\(server.endpoint)"
        case .cluster(let router): "cluster " + router.seeds.map(\.description).joined(separator: ",")
        }
    }

    /// Sends one command and returns its reply. An error reply throws `RedisServerError`.
    @discardableResult
    public func send(_ command: [String]) async throws -> RESPValue {
        switch mode {
        case .single(let server): return try await server.send(command)
        case .cluster(let router):
            let reply = try await router.send(command)
            if case .error(let message) = reply { throw RedisServerError(message) }
            return reply
        }
    }

    /// Sends several commands in one round trip (per primary) and returns their replies in
    /// order. Error replies are returned as `.error` values, since the other commands still ran.
    public func pipeline(_ commands: [[String]], order: Order = .independent) async throws -> [RESPValue] {
        switch mode {
        case .single(let server): return try await server.pipeline(commands)  // one server keeps the order
        case .cluster(let router):
            guard order == .inOrder else { return try await router.pipeline(commands) }
            var replies: [RESPValue] = []
            for command in commands { replies.append(try await router.send(command)) }
            return replies
        }
    }

    /// Runs `commands` as one transaction (`MULTI` … `EXEC`, one round trip): nothing else runs
    /// between them. They must share a slot. Returns their replies; a command refused as it
    /// was queued (so that none ran) throws that refusal.
    public func transaction(_ commands: [[String]]) async throws -> [RESPValue] {
        let replies: [RESPValue] = switch mode {
        case .single(let server): try await server.pipeline([["MULTI"]] + commands + [["EXEC"]])
        case .cluster(let router): try await router.transaction(commands)
        }
        guard let results = replies.last?.array, results.count == commands.count else {
            // EXECABORT: a command was refused as it was queued (READONLY after a failover,
            // LOADING, …). That refusal is the cause, and says whether to wait and retry.
            let refusal = replies.dropFirst().dropLast().lazy.compactMap(\.errorMessage).first
            throw RedisServerError(refusal ?? replies.last?.errorMessage ?? "EXEC answered \(String(describing: replies.last))")
        }
        return results
    }

    /// Sends a command that names no key to every primary (the one server, or each primary
    /// of the cluster), one after the other, and returns each one's reply (an error reply as
    /// `.error`) or the error that kept it from answering. (Its uses are rare: script loads,
    /// readiness, `/status`. A task group filling the replies by index made a release
    /// build with Swift 6.3.1 trap in `Array.subscript.modify` every time; debug builds did not.)
    public func sendToEachPrimary(_ command: [String]) async throws -> [Result<RESPValue, Error>] {
        var replies: [Result<RESPValue, Error>] = []
        for server in try await primaries() {
            do { replies.append(.success(try await server.reply(to: command))) } catch { replies.append(.failure(error)) }
        }
        return replies
    }

    /// Asks each primary who it is and tells the observer (`observeServers`), on the
    /// connection commands use (opened again if it dropped). A connection reads it as it opens,
    /// but Redis keeps a connection open across a change of role: a primary demoted and
    /// promoted again while the node sent it nothing is seen only this way. Errors are left to
    /// the commands that meet them.
    public func observeEachPrimary() async {
        for server in (try? await primaries()) ?? [] {
            try? await server.observeIdentity()
        }
    }

    /// Every key matching `pattern`, on every primary (`SCAN … MATCH`). A key may be listed
    /// twice if it moves while the scan runs.
    public func keys(matching pattern: String) async throws -> [String] {
        var keys: [String] = []
        for server in try await primaries() {
            var cursor = "0"
            repeat {
                let reply = try await server.send(["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"]).array ?? []
                cursor = reply.first?.string ?? "0"
                keys += (reply.count > 1 ? reply[1].array ?? [] : []).compactMap(\.string)
            } while cursor != "0"
        }
        return keys
    }

    private func primaries() async throws -> [RedisServerClient] {
        switch mode {
        case .single(let server): [server]
        case .cluster(let router): try await router.primaries()
        }
    }

    // MARK: The map of slots

    /// Which primary serves each slot: the one server for all, or the cluster's map (read
    /// first if it never was).
    public func topology() async throws -> ClusterTopology {
        switch mode {
        case .single(let server): ClusterTopology(single: server.endpoint)
        case .cluster(let router): try await router.topology()
        }
    }

    /// The map as last read, without waiting; nil on a cluster whose map was never read.
    public var currentTopology: ClusterTopology? {
        switch mode {
        case .single(let server): ClusterTopology(single: server.endpoint)
        case .cluster(let router): router.currentTopology
        }
    }

    /// Reads the cluster's map again (a single server's never changes).
    @discardableResult
    public func refreshTopology() async throws -> ClusterTopology {
        switch mode {
        case .single(let server): ClusterTopology(single: server.endpoint)
        case .cluster(let router): try await router.refresh()
        }
    }

    /// The map now, and again each time it changes.
    public func topologyUpdates() -> AsyncStream<ClusterTopology> {
        switch mode {
        case .single(let server):
            let (stream, continuation) = AsyncStream.makeStream(of: ClusterTopology.self)
            continuation.yield(ClusterTopology(single: server.endpoint))
            return stream
        case .cluster(let router): return router.topologyUpdates()
        }
    }

    /// Closes the connections; later commands fail.
    public func close() async {
        switch mode {
        case .single(let server): await server.close()
        case .cluster(let router): await router.close()
        }
    }
}
