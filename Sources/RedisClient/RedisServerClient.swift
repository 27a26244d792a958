import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A connection to one Redis server that comes back by itself. Commands from any number of
/// tasks share one pipelined connection. While the server is unreachable, commands fail at
/// once with `RedisConnectionError` (so callers can answer 503) and a new connection is tried
/// on use, no more often than the back-off allows. `RedisClient` uses one for a single Redis,
/// and one per primary on a cluster.
public final class RedisServerClient: Sendable {
    public let endpoint: RedisEndpoint
    private let group: EventLoopGroup
    private let commandTimeout: TimeAmount
    private let logger: Logger
    private let state: NIOLockedValueBox<State>
    private let onConnectionEvent: (@Sendable (RedisConnectionEvent) -> Void)?
    private let identityObserver: IdentityObserver?

    private struct State {
        var connection: RedisConnection?
        var connecting: Task<RedisConnection, Error>?
        var backoff = Backoff()
        var failedAttempts = 0
        var nextAttempt = NIODeadline.uptimeNanoseconds(0)
        var closed = false
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
        self.group = group
        self.commandTimeout = commandTimeout
        self.logger = logger
        self.state = NIOLockedValueBox(State())
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

    /// The live connection, opening a new one if there is none and the back-off allows.
    public func connection() async throws -> RedisConnection {
        let next: Next = try state.withLockedValue { state in
            if let connection = state.connection, connection.isActive { return .open(connection) }
            if state.closed { throw RedisConnectionError.connectionClosed }
            if let connecting = state.connecting { return .opening(connecting) }
            let now = NIODeadline.now()
            guard now >= state.nextAttempt else {
                let wait = (state.nextAttempt - now).nanoseconds / 1_000_000
                throw RedisConnectionError.unavailable(retryAfterMilliseconds: Int(max(wait, 1)))
            }
            let task = Task { try await self.open() }
            state.connecting = task
            return .opening(task)
        }
        switch next {
        case .open(let connection): return connection
        case .opening(let task): return try await task.value
        }
    }

    /// What a command waits for: the open connection (the common case: no task, no wait), or
    /// the one attempt to open one that every caller shares.
    private enum Next {
        case open(RedisConnection)
        case opening(Task<RedisConnection, Error>)
    }

    private func open() async throws -> RedisConnection {
        do {
            let connection = try await RedisConnection.connect(
                to: endpoint, on: group, commandTimeout: commandTimeout)
            if let identityObserver {
                // Before any command runs on the new connection: the observer learns of a
                // restart or a promotion first (see `ServerIdentity`).
                // A server that accepts connections but does not answer (a stopped process)
                // fails the attempt, so it is retried with back-off rather than handed out.
                let info: String?
                do {
                    info = try await connection.send(["INFO", "server", "replication"]).string
                } catch let error as RedisConnectionError {
                    await connection.close()
                    throw error
                } catch {
                    info = nil  // refused (a user without INFO): no identity to watch
                }
                if let identity = info.flatMap(ServerIdentity.init(info:)) { identityObserver.observe(endpoint, identity) }
            }
            let wasDown = state.withLockedValue { state in
                let wasDown = state.failedAttempts > 0
                state.failedAttempts = 0
                state.backoff.reset()
                state.connection = connection
                state.connecting = nil
                return wasDown
            }
            if wasDown {
                logger.info("redis connection restored", metadata: ["redis": "\(endpoint)"])
                onConnectionEvent?(.restored)
            }
            connection.closeFuture.whenComplete { [weak self] _ in self?.forget(connection) }
            return connection
        } catch {
            let delay = state.withLockedValue { state in
                state.connecting = nil
                state.failedAttempts += 1
                let delay = state.backoff.next()
                state.nextAttempt = .now() + delay
                return delay
            }
            onConnectionEvent?(.connectFailed)
            logger.warning(
                "redis connection failed",
                metadata: ["redis": "\(endpoint)", "error": "\(error)", "retry_in_ms": "\(delay.nanoseconds / 1_000_000)"])
            throw error
        }
    }

    private func forget(_ connection: RedisConnection) {
        let wasCurrent = state.withLockedValue { state in
            guard state.connection === connection else { return false }
            state.connection = nil
            return true
        }
        if wasCurrent, !state.withLockedValue({ $0.closed }) {
            logger.warning("redis connection lost", metadata: ["redis": "\(endpoint)"])
            state.withLockedValue { $0.failedAttempts = max($0.failedAttempts, 1) }  // the next connection is a recovery
            onConnectionEvent?(.lost)
        }
    }

    /// Closes the connection; later commands fail.
    public func close() async {
        let connection = state.withLockedValue { state in
            state.closed = true
            return state.connection
        }
        await connection?.close()
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
