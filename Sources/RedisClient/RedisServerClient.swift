import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Connections to one Redis server that come back by themselves: one per event loop of the
/// group, each opened when a command first comes from its loop, and shared, pipelined, by every
/// task sending from there (a caller on no loop of the group uses the first loop's). A command
/// then never crosses threads on its way out or its reply's way back: a node on two loops that
/// shared one connection spent a tenth more CPU per relay than a node on one loop; with one per
/// loop the two no longer differ (README, "Design").
/// While the server is unreachable, commands fail at once with `RedisConnectionError` (so
/// callers can answer 503) and a new connection is tried on use, no more often than the
/// back-off allows. `RedisClient` uses one for a single Redis, and one per primary on a cluster.
public final class RedisServerClient: Sendable {
    public let endpoint: RedisEndpoint
    /// The group's loops, and each one's place among them.
    private let loops: [any EventLoop]
    private let placeOfLoop: [ObjectIdentifier: Int]
    private let commandTimeout: TimeAmount
    private let logger: Logger
    private let state: NIOLockedValueBox<State>
    private let onConnectionEvent: (@Sendable (RedisConnectionEvent) -> Void)?
    private let identityObserver: IdentityObserver?

    private struct State {
        /// Per loop, by its place.
        var connections: [RedisConnection?]
        var connecting: [Task<RedisConnection, Error>?]
        /// Shared by the loops' connections: they reach one server, which is up or down for all.
        var backoff = Backoff()
        var failedAttempts = 0
        var nextAttempt = NIODeadline.uptimeNanoseconds(0)
        var closed = false
        /// Counts `retireConnections`: an identity read before the last one is stale.
        var identityGeneration: UInt64 = 0

        init(loops: Int) {
            connections = Array(repeating: nil, count: loops)
            connecting = Array(repeating: nil, count: loops)
        }
    }

    public init(
        endpoint: RedisEndpoint,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        commandTimeout: TimeAmount = .seconds(5),
        logger: Logger = Logger(label: "redis"),
        onConnectionEvent: (@Sendable (RedisConnectionEvent) -> Void)? = nil,
        identityObserver: IdentityObserver? = nil
    ) {
        self.onConnectionEvent = onConnectionEvent
        self.identityObserver = identityObserver
        self.endpoint = endpoint
        var loops: [any EventLoop] = []
        for loop in group.makeIterator() { loops.append(loop) }
        if loops.isEmpty { loops = [group.next()] }  // a group that cannot list its loops
        self.loops = loops
        placeOfLoop = Dictionary(loops.enumerated().map { (ObjectIdentifier($1), $0) }, uniquingKeysWith: { first, _ in first })
        self.commandTimeout = commandTimeout
        self.logger = logger
        self.state = NIOLockedValueBox(State(loops: loops.count))
    }

    /// Sends one command; see `RedisConnection.send`.
    @discardableResult
    public func send(_ arguments: [String]) async throws -> RESPValue {
        try await connection().send(arguments)
    }

    /// Sends several commands in one write; see `RedisConnection.pipeline`.
    public func pipeline(_ commands: [[String]]) async throws -> [RESPValue] {
        try await connection().pipeline(commands)
    }

    /// Sends one command and returns its reply, an error reply too (for a caller that reads
    /// redirections).
    func reply(to command: [String]) async throws -> RESPValue {
        try await connection().sendRaw(command).get()
    }

    /// The live connection of the caller's loop, opening a new one if there is none and the
    /// back-off allows.
    public func connection() async throws -> RedisConnection {
        let place = MultiThreadedEventLoopGroup.currentEventLoop.flatMap { placeOfLoop[ObjectIdentifier($0)] } ?? 0
        let next: Next = try state.withLockedValue { state in
            if let connection = state.connections[place], connection.isActive { return .open(connection) }
            if state.closed { throw RedisConnectionError.connectionClosed }
            if let connecting = state.connecting[place] { return .opening(connecting) }
            let now = NIODeadline.now()
            guard now >= state.nextAttempt else {
                // This loop's connection failed while another loop's is up: share that one.
                if let live = state.connections.lazy.compactMap({ $0 }).first(where: \.isActive) { return .open(live) }
                let wait = (state.nextAttempt - now).nanoseconds / 1_000_000
                throw RedisConnectionError.unavailable(retryAfterMilliseconds: Int(max(wait, 1)))
            }
            let task = Task { try await self.open(at: place) }
            state.connecting[place] = task
            return .opening(task)
        }
        switch next {
        case .open(let connection): return connection
        case .opening(let task):
            let connection = try await task.value
            // Retired as it opened (see `retireConnections`): the next one reads who the server is.
            guard state.withLockedValue({ $0.connections[place] === connection }) else { return try await self.connection() }
            return connection
        }
    }

    /// What a command waits for: the open connection (the common case: no task, no wait), or
    /// the one attempt to open one that every caller shares.
    private enum Next {
        case open(RedisConnection)
        case opening(Task<RedisConnection, Error>)
    }

    private func open(at place: Int) async throws -> RedisConnection {
        do {
            let connection = try await RedisConnection.connect(
                to: endpoint, on: loops[place], commandTimeout: commandTimeout)
            // Before any command runs on the new connection: the observer learns of a restart
            // or a promotion first (see `ServerIdentity`), and again if the server's connections
            // were retired while it read it.
            var generation = state.withLockedValue { $0.identityGeneration }
            var stored: Stored = .stale
            while case .stale = stored {
                try await observeIdentity(on: connection)
                stored = state.withLockedValue { state in
                    guard state.identityGeneration == generation else {
                        generation = state.identityGeneration
                        return .stale
                    }
                    state.connecting[place] = nil
                    guard !state.closed else { return .closed }  // closed while connecting
                    let wasDown = state.failedAttempts > 0
                    state.failedAttempts = 0
                    state.backoff.reset()
                    state.connections[place] = connection
                    return .stored(wasDown: wasDown)
                }
            }
            if case .closed = stored {
                await connection.close()
                throw RedisConnectionError.connectionClosed
            }
            if case .stored(wasDown: true) = stored {
                logger.info("redis connection restored", metadata: ["redis": "\(endpoint)"])
                onConnectionEvent?(.restored)
            }
            connection.closeFuture.whenComplete { [weak self] _ in self?.forget(connection) }
            return connection
        } catch {
            let delay: TimeAmount? = state.withLockedValue { state in
                state.connecting[place] = nil
                guard !state.closed else { return nil }
                // The server is down unless another loop's connection to it is up (then this
                // loop shares that one until the back-off allows another try).
                if !state.connections.contains(where: { $0?.isActive == true }) { state.failedAttempts += 1 }
                // Another loop's attempt of the same moment failed first: one step of back-off
                // for both, not one each.
                let now = NIODeadline.now()
                guard now >= state.nextAttempt else { return state.nextAttempt - now }
                let delay = state.backoff.next()
                state.nextAttempt = now + delay
                return delay
            }
            guard let delay else { throw error }  // the client closed meanwhile
            onConnectionEvent?(.connectFailed)
            logger.warning(
                "redis connection failed",
                metadata: ["redis": "\(endpoint)", "error": "\(error)", "retry_in_ms": "\(delay.nanoseconds / 1_000_000)"])
            throw error
        }
    }

    private enum Stored {
        case stored(wasDown: Bool)
        /// The server's connections were retired while its identity was read: read it again.
        case stale
        case closed
    }

    /// Reads who the server is on `connection` and tells the observer, if there is one. A
    /// server that accepts connections but does not answer (a stopped process) fails the
    /// attempt, so that it is retried with back-off rather than handed out.
    private func observeIdentity(on connection: RedisConnection) async throws {
        guard let identityObserver else { return }
        let info: String?
        do {
            info = try await connection.send(["INFO", "server", "replication"]).string
        } catch let error as RedisConnectionError {
            // Whatever went wrong, the caller's command was not sent: say so, so that a
            // cluster's router may send it elsewhere rather than answer 503.
            await connection.close()
            throw RedisConnectionError.connectFailed("\(endpoint): INFO failed: \(error)")
        } catch {
            info = nil  // refused (a user without INFO): no identity to watch
        }
        if let identity = info.flatMap(ServerIdentity.init(info:)) { identityObserver.observe(endpoint, identity) }
    }

    /// Asks the server who it is on the caller's loop's connection (opened first if there is
    /// none, and then read as it opens) and tells the observer. See `RedisClient.observeEachPrimary`.
    func observeIdentity() async throws {
        try await observeIdentity(on: try await connection())
    }

    private func forget(_ connection: RedisConnection) {
        let wasCurrent = state.withLockedValue { state in
            guard let place = state.connections.firstIndex(where: { $0 === connection }) else { return false }
            state.connections[place] = nil
            return true
        }
        if wasCurrent, !state.withLockedValue({ $0.closed }) {
            logger.warning("redis connection lost", metadata: ["redis": "\(endpoint)"])
            state.withLockedValue { $0.failedAttempts = max($0.failedAttempts, 1) }  // the next connection is a recovery
            onConnectionEvent?(.lost)
        }
    }

    /// Takes the open connections out of use, without counting them as lost, so that the next
    /// command opens one that reads who the server is first; the caller closes them (see
    /// `RedisConnection.closeAfterPendingReplies`). A connection being opened meanwhile reads
    /// it again before it is handed out. For a server a new cluster map makes a primary: Redis
    /// keeps its clients' connections across a change of role, so one opened while it was a
    /// replica, or a primary before a failover and back, never saw what it became (a promotion
    /// may have lost writes).
    func retireConnections() -> [RedisConnection] {
        state.withLockedValue { state in
            defer { state.connections = Array(repeating: nil, count: state.connections.count) }
            state.identityGeneration += 1
            return state.connections.compactMap { $0 }
        }
    }

    /// Closes the connection; later commands fail.
    public func close() async {
        let connections = state.withLockedValue { state in
            state.closed = true
            return state.connections.compactMap { $0 }
        }
        for connection in connections { await connection.close() }
    }
}

/// Tells whoever asks (`RedisClient.observeServers`) who each server is when a connection to it
/// opens. Settable after the client is made, since the coordinator that watches comes later.
public final class IdentityObserver: Sendable {
    private let handler = NIOLockedValueBox<(@Sendable (RedisEndpoint, ServerIdentity) -> Void)?>(nil)

    public init() {}

    func set(_ handler: @escaping @Sendable (RedisEndpoint, ServerIdentity) -> Void) {
        self.handler.withLockedValue { $0 = handler }
    }

    func observe(_ endpoint: RedisEndpoint, _ identity: ServerIdentity) {
        handler.withLockedValue { $0 }?(endpoint, identity)
    }
}
