import Logging
import NIOCore
import NIOPosix

/// One connection to Redis. Any number of tasks may send at once: commands are pipelined and
/// each reply goes back to the command that asked for it.
public final class RedisConnection: Sendable {
    let channel: Channel

    init(channel: Channel) { self.channel = channel }

    /// Opens a connection and logs in (AUTH, SELECT) as the endpoint says.
    public static func connect(
        to endpoint: RedisEndpoint,
        on group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        connectTimeout: TimeAmount = .seconds(2),
        commandTimeout: TimeAmount = .seconds(5)
    ) async throws -> RedisConnection {
        try await connect(to: endpoint, on: group, connectTimeout: connectTimeout, commandTimeout: commandTimeout, onPush: nil)
    }

    static func connect(
        to endpoint: RedisEndpoint,
        on group: EventLoopGroup,
        connectTimeout: TimeAmount,
        commandTimeout: TimeAmount,
        onPush: (@Sendable (RESPValue) -> Void)?
    ) async throws -> RedisConnection {
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        RESPDecoder(),
                        RedisCommandHandler(commandTimeout: commandTimeout, onPush: onPush)
                    )
                }
            }
        let channel: Channel
        do {
            switch endpoint.address {
            case .tcp(let host, let port):
                channel = try await bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .connect(host: host, port: port).get()
            case .unix(let path):
                channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
            }
        } catch {
            throw RedisConnectionError.connectFailed("\(endpoint): \(error)")
        }
        let connection = RedisConnection(channel: channel)
        do {
            if let password = endpoint.password {
                let auth = endpoint.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]
                _ = try await connection.send(auth)
            }
            if endpoint.database != 0 {
                _ = try await connection.send(["SELECT", String(endpoint.database)])
            }
        } catch {
            await connection.close()
            throw RedisConnectionError.connectFailed("\(endpoint): \(error)")
        }
        return connection
    }

    public var isActive: Bool { channel.isActive }

    /// Completes when the connection has closed, for whatever reason.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// Sends one command and waits for its reply. An error reply throws `RedisServerError`;
    /// a lost connection throws `RedisConnectionError`.
    @discardableResult
    public func send(_ arguments: [String]) async throws -> RESPValue {
        let reply = try await sendRaw(arguments).get()
        if case .error(let message) = reply { throw RedisServerError(message) }
        return reply
    }

    /// Sends several commands in one write and returns their replies in order. Error replies are
    /// returned as `.error` values, since the other commands still ran.
    public func pipeline(_ commands: [[String]]) async throws -> [RESPValue] {
        var bytes = channel.allocator.buffer(capacity: 64 * commands.count)
        var promises: [EventLoopPromise<RESPValue>] = []
        promises.reserveCapacity(commands.count)
        for command in commands {
            CommandEncoder.encode(command, into: &bytes)
            promises.append(channel.eventLoop.makePromise())
        }
        write(RedisRequest(bytes: bytes, promises: promises))
        // One wait for all replies, not one task switch per reply.
        let results = try await EventLoopFuture.whenAllComplete(promises.map(\.futureResult), on: channel.eventLoop).get()
        return try results.map { try $0.get() }
    }

    func sendRaw(_ arguments: [String]) -> EventLoopFuture<RESPValue> {
        var bytes = channel.allocator.buffer(capacity: 64)
        CommandEncoder.encode(arguments, into: &bytes)
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        write(RedisRequest(bytes: bytes, promises: [promise]))
        return promise.futureResult
    }

    /// Writes a request whose replies `RedisCommandHandler` hands back. A write that reaches no
    /// handler (the connection closed and NIO already took the handlers out of its pipeline)
    /// fails its replies here: nothing else would, and their callers would wait forever. A
    /// reply already failed by the handler stays as it was.
    private func write(_ request: RedisRequest) {
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { _ in
            for promise in request.promises { promise.fail(RedisConnectionError.connectionClosed) }
        }
        channel.writeAndFlush(request, promise: written)
    }

    /// Writes a command whose reply will arrive as a push (pub/sub mode), not to a waiting caller.
    func sendWithoutReply(_ arguments: [String]) {
        var bytes = channel.allocator.buffer(capacity: 64)
        CommandEncoder.encode(arguments, into: &bytes)
        channel.writeAndFlush(RedisRequest(bytes: bytes, promises: []), promise: nil)
    }

    public func close() async {
        try? await channel.close()
    }

    /// Closes the connection once no command on it waits for a reply, so that none written
    /// on it, before this or after, fails as maybe-sent.
    func closeAfterPendingReplies() {
        channel.triggerUserOutboundEvent(RedisCommandHandler.CloseWhenIdle(), promise: nil)
    }
}
