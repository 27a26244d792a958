import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Commands on a Redis Cluster: each goes to the primary owning its key's slot, over one
/// pipelined connection per primary. Follows `MOVED` (updating the map) and `ASK` (with
/// `ASKING`), waits out `TRYAGAIN` and `CLUSTERDOWN` for a bounded time, and reads the map
/// again (`CLUSTER SLOTS`) when a primary cannot be reached, since a replica may have taken
/// over. A command that may have reached a server is never sent twice.
final class ClusterRouter: Sendable {
    let seeds: [RedisEndpoint]
    private let group: EventLoopGroup
    private let commandTimeout: TimeAmount
    private let logger: Logger
    private let onConnectionEvent: (@Sendable (RedisConnectionEvent) -> Void)?
    private let identityObserver: IdentityObserver
    private let state = NIOLockedValueBox(State())
    /// The version of the map last given to the watchers. Maps are yielded under this lock, not
    /// `state`'s: a watcher's stream, cancelled, takes `state` (to forget the watcher) while it
    /// holds its task's lock, and a yield that resumed that task under `state` waited for the
    /// same task's lock (a deadlock seen once at a node's shutdown).
    private let yielded = NIOLockedValueBox<UInt64>(0)

    /// Redirections and waits one command may go through before it fails as unavailable: a
    /// slot migration is a redirection or two, a failover's `CLUSTERDOWN` a few waits.
    static let maxAttempts = 12

    private struct State {
        var topology: ClusterTopology?
        var servers: [RedisEndpoint.Address: RedisServerClient] = [:]
        var refreshing: Task<ClusterTopology, Error>?
        var watchers: [UInt64: AsyncStream<ClusterTopology>.Continuation] = [:]
        var nextWatcher: UInt64 = 0
        /// `close()` was called: no server client is made any more.
        var closed = false
    }

    init(
        seeds: [RedisEndpoint], group: EventLoopGroup, commandTimeout: TimeAmount, logger: Logger,
        onConnectionEvent: (@Sendable (RedisConnectionEvent) -> Void)?, identityObserver: IdentityObserver
    ) {
        self.identityObserver = identityObserver
        precondition(!seeds.isEmpty, "a cluster needs at least one seed")
        self.seeds = seeds
        self.group = group
        self.commandTimeout = commandTimeout
        self.logger = logger
        self.onConnectionEvent = onConnectionEvent
    }

    // MARK: The map

    /// The map as last read, if it has been.
    var currentTopology: ClusterTopology? { state.withLockedValue { $0.topology } }

    /// The map, read first if it never was.
    func topology() async throws -> ClusterTopology {
        if let topology = currentTopology { return topology }
        return try await refresh()
    }

    /// Reads the map again, from the first server that answers (the known primaries, then the
    /// seeds). Calls made while a read is under way share it.
    @discardableResult
    func refresh() async throws -> ClusterTopology {
        let task = state.withLockedValue { state in
            if let running = state.refreshing { return running }
            let task = Task { try await self.readTopology() }
            state.refreshing = task
            return task
        }
        return try await task.value
    }

    /// Starts a read of the map without waiting for it (after a `MOVED`, or a lost primary).
    func refreshSoon() {
        Task { _ = try? await self.refresh() }
    }

    /// Yields the map now (if read) and each time it changes.
    func topologyUpdates() -> AsyncStream<ClusterTopology> {
        let (stream, continuation) = AsyncStream.makeStream(of: ClusterTopology.self, bufferingPolicy: .bufferingNewest(1))
        let id = state.withLockedValue { state in
            defer { state.nextWatcher += 1 }
            state.watchers[state.nextWatcher] = continuation
            if let topology = state.topology { continuation.yield(topology) }
            return state.nextWatcher
        }
        continuation.onTermination = { [weak self] _ in _ = self?.state.withLockedValue { $0.watchers.removeValue(forKey: id) } }
        return stream
    }

    private func readTopology() async throws -> ClusterTopology {
        defer { state.withLockedValue { $0.refreshing = nil } }
        let known = currentTopology?.primaries ?? []
        var lastError: Error = RedisConnectionError.connectFailed("no seed answered")
        for candidate in known + seeds.filter({ !known.contains($0) }) {
            do {
                let reply = try await server(at: candidate.address).send(["CLUSTER", "SLOTS"])
                let topology = try ClusterTopology(clusterSlots: reply, asked: candidate, credentials: seeds[0])
                return adopt { _ in topology } ?? topology
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// Makes `change(current map)` the map, unless it is nil or the same, and tells the
    /// watchers. Returns the map now (nil if none was ever read). Under the lock, so that a
    /// change made from a map is never applied over a newer one; watchers never get a map
    /// older than one they were given.
    ///
    /// A server the map makes a primary that served no slot before gets new connections before
    /// any command routed by this map reaches it (see `RedisServerClient.retireConnections`).
    @discardableResult
    private func adopt(_ change: (ClusterTopology?) -> ClusterTopology?) -> ClusterTopology? {
        typealias Adopted = (current: ClusterTopology?, changed: Bool, retired: [RedisConnection], watchers: [AsyncStream<ClusterTopology>.Continuation])
        let (current, changed, retired, watchers) = state.withLockedValue { state -> Adopted in
            guard var topology = change(state.topology), topology != state.topology else { return (state.topology, false, [], []) }
            topology.version = (state.topology?.version ?? 0) + 1
            var retired: [RedisConnection] = []
            if let previous = state.topology {  // the first map comes right after the seeds said who they are
                let wasServing = previous.servingPrimaries
                for address in topology.servingPrimaries.subtracting(wasServing) {
                    retired += state.servers[address]?.retireConnections() ?? []
                }
            }
            state.topology = topology
            return (topology, true, retired, Array(state.watchers.values))
        }
        // Closed outside the lock: a channel closed on its own loop runs its callbacks at once.
        for connection in retired { connection.closeAfterPendingReplies() }
        if changed, let current {
            yielded.withLockedValue { last in
                guard current.version > last else { return }  // a newer map went out first
                last = current.version
                for watcher in watchers { watcher.yield(current) }
            }
            logger.info("cluster map read", metadata: ["primaries": "\(current.primaries.map(\.description))"])
        }
        return current
    }

    /// The client of the server at `address` (made on first use, with the seeds' credentials).
    /// Once the router is closed, none: a refresh or a redirection still under way would
    /// open connections nothing closes.
    func server(at address: RedisEndpoint.Address) throws -> RedisServerClient {
        try state.withLockedValue { state in
            if let server = state.servers[address] { return server }
            if state.closed { throw RedisConnectionError.connectionClosed }
            var endpoint = seeds[0]
            endpoint.address = address
            let server = RedisServerClient(
                endpoint: endpoint, group: group, commandTimeout: commandTimeout, logger: logger, onConnectionEvent: onConnectionEvent,
                identityObserver: identityObserver)
            state.servers[address] = server
            return server
        }
    }

    /// The clients of every primary in the map.
    func primaries() async throws -> [RedisServerClient] {
        try await topology().primaries.map { try server(at: $0.address) }
    }

    // MARK: Routing

    /// Sends one command to the primary of its key's slot (a keyless one to any primary).
    func send(_ command: [String]) async throws -> RESPValue {
        guard let key = CommandRouting.key(of: command) else { return try await primaries()[0].reply(to: command) }
        return try await routed(slot: HashSlot.of(key)) { server, asking in
            asking ? try await server.pipeline([["ASKING"], command])[1] : try await server.reply(to: command)
        } redirection: { reply, server in
            reply.errorMessage.flatMap { ClusterRedirection($0, from: server) }
        }
    }

    /// Sends `MULTI`, `commands`, `EXEC` to the primary of their slot and returns every reply
    /// from `MULTI`'s on. A command refused as it is queued because its slot is elsewhere
    /// redirects the whole transaction (nothing of it ran).
    func transaction(_ commands: [[String]]) async throws -> [RESPValue] {
        let slot = CommandRouting.slot(of: commands) ?? 0
        let transaction = [["MULTI"]] + commands + [["EXEC"]]
        return try await routed(slot: slot) { server, asking in
            asking ? Array(try await server.pipeline([["ASKING"]] + transaction).dropFirst()) : try await server.pipeline(transaction)
        } redirection: { replies, server in
            replies.dropFirst().lazy.compactMap { $0.errorMessage.flatMap { ClusterRedirection($0, from: server) } }.first
        }
    }

    /// Independent commands, split by primary and sent to all of them at once; replies in the
    /// caller's order. A command redirected, or whose primary could not be reached, is sent
    /// again on its own, routed as `send` does.
    func pipeline(_ commands: [[String]]) async throws -> [RESPValue] {
        let topology = try await topology()
        var batches: [RedisEndpoint.Address: [Int]] = [:]
        for (index, command) in commands.enumerated() {
            let owner = CommandRouting.key(of: command).flatMap { topology.owner(of: $0) } ?? topology.primaries[0]
            batches[owner.address, default: []].append(index)
        }
        var replies = [RESPValue?](repeating: nil, count: commands.count)
        try await withThrowingTaskGroup(of: [(Int, RESPValue?)].self) { group in
            for (address, indices) in batches {
                group.addTask {
                    let server = try self.server(at: address)
                    let batch: [RESPValue]
                    do {
                        batch = try await server.pipeline(indices.map { commands[$0] })
                    } catch let error as RedisConnectionError where error.neverSent {
                        return indices.map { ($0, nil) }
                    }
                    return zip(indices, batch).map { index, reply in
                        let redirected = reply.errorMessage.flatMap { ClusterRedirection($0, from: server.endpoint) } != nil
                        return (index, redirected ? nil : reply)
                    }
                }
            }
            for try await part in group { for (index, reply) in part { replies[index] = reply } }
        }
        for index in replies.indices where replies[index] == nil { replies[index] = try await send(commands[index]) }
        return replies.map { $0! }
    }

    /// Runs `attempt` on the primary of `slot`, following what `redirection` reads in its
    /// result, until it is not redirected or `maxAttempts` are spent.
    private func routed<Result>(
        slot: Int,
        _ attempt: (RedisServerClient, _ asking: Bool) async throws -> Result,
        redirection: (Result, RedisEndpoint) -> ClusterRedirection?
    ) async throws -> Result {
        var target: RedisEndpoint.Address?
        var asking = false
        var wait = Duration.milliseconds(10)
        for _ in 0..<Self.maxAttempts {
            let address: RedisEndpoint.Address
            if let target {
                address = target
            } else if let owner = try await topology().owner(ofSlot: slot) {
                address = owner.address
            } else {
                // No primary serves the slot (the cluster is failing over): read again after a pause.
                try await Task.sleep(for: wait)
                wait = min(wait * 2, .milliseconds(500))
                _ = try? await refresh()
                continue
            }
            let server = try server(at: address)
            let result: Result
            do {
                result = try await attempt(server, asking)
            } catch let error as RedisConnectionError {
                // The primary may be gone, a replica taking over: look at the map again. A
                // command that was sent is not sent again (its outcome is unknown).
                guard error.neverSent, let owner = try? await refresh().owner(ofSlot: slot), owner.address != address else {
                    refreshSoon()
                    throw error
                }
                (target, asking) = (nil, false)
                continue
            }
            switch redirection(result, server.endpoint) {
            case nil:
                return result
            case .moved(let movedSlot, let newOwner):
                var primary = seeds[0]
                primary.address = newOwner
                adopt { $0?.moving(slot: movedSlot, to: primary) }
                refreshSoon()
                (target, asking) = (newOwner, false)
            case .ask(_, let importing):
                (target, asking) = (importing, true)
            case .retryLater:
                try await Task.sleep(for: wait)
                wait = min(wait * 2, .milliseconds(500))
                (target, asking) = (nil, false)
            }
        }
        throw RedisConnectionError.unavailable(retryAfterMilliseconds: 500)
    }

    func close() async {
        let servers = state.withLockedValue { state in
            state.closed = true
            return Array(state.servers.values)
        }
        for server in servers { await server.close() }
    }
}

extension RedisConnectionError {
    /// Whether the command surely did not reach the server: the connection could not be made.
    var neverSent: Bool {
        switch self {
        case .connectFailed, .unavailable: true
        case .connectionClosed, .protocolError, .timeout: false
        }
    }
}
