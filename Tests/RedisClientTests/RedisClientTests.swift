import NIOCore
import NIOPosix
import RedisServer
import Testing

@testable import HTTPServer  // EventLoopExecutor: the executor the node's relays send from
@testable import RedisClient

@Suite("Redis client against a live redis-server")
struct RedisClientTests {
    @Test func commandsOverUnixSocketAndTCP() async throws {
        let port = try RedisServerProcess.freePort()
        try await RedisServerProcess.with(tcpPort: port) { server in
            for url in [server.url, "redis://127.0.0.1:\(port)"] {
                let connection = try await RedisConnection.connect(to: RedisEndpoint(url: url))
                #expect(try await connection.send(["SET", "greeting", "héllo"]) == .simpleString("OK"))
                #expect(try await connection.send(["GET", "greeting"]).string == "héllo")
                #expect(try await connection.send(["GET", "missing"]) == .null)
                try await connection.send(["DEL", "n"])
                #expect(try await connection.send(["INCRBY", "n", "5"]) == .integer(5))
                await connection.close()
            }
        }
    }

    @Test func tenThousandPipelinedCommandsReplyInOrder() async throws {
        try await RedisServerProcess.with { server in
            let connection = try await RedisConnection.connect(to: RedisEndpoint(url: server.url))
            let replies = try await connection.pipeline(Array(repeating: ["INCR", "counter"], count: 10_000))
            #expect(replies == (1...10_000).map { RESPValue.integer($0) })

            // Many tasks at once on the one connection: each gets its own reply.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<2_000 {
                    group.addTask {
                        let reply = try await connection.send(["ECHO", "message-\(i)"])
                        #expect(reply.string == "message-\(i)")
                    }
                }
                try await group.waitForAll()
            }
            await connection.close()
        }
    }

    /// The stall of the full test suite: a command written just after its connection closed,
    /// once NIO had taken the handlers out of the pipeline, never got an answer. The write
    /// reached no handler, so nothing failed its reply promise, and the caller (a heartbeat,
    /// a stream's clean-up) waited forever: the node could not stop, nor the test. A caller
    /// that finds the connection open and is preempted while Redis goes away does exactly this.
    /// Every command on a closed connection must fail at once, and so must every pipeline.
    @Test func aCommandWrittenAfterTheConnectionClosedFailsAtOnce() async throws {
        try await RedisServerProcess.with { server in
            let connection = try await RedisConnection.connect(to: RedisEndpoint(url: server.url))
            await connection.close()
            // The handlers leave the pipeline in a later turn of the event loop: let it pass.
            try await connection.channel.eventLoop.submit {}.get()
            let commands: [@Sendable () async throws -> Void] = [
                { _ = try await connection.send(["PING"]) }, { _ = try await connection.pipeline([["PING"], ["PING"]]) },
            ]
            for command in commands {
                #expect(await Self.outcome(within: .seconds(5), command) == .failed, "a command on a closed connection must fail, not wait")
            }
        }
    }

    enum Outcome: Equatable { case succeeded, failed, stillWaiting }

    /// How `operation` ended within `limit`, without waiting for it past that: an awaited
    /// future that is never completed cannot be cancelled, so it is left behind unawaited.
    static func outcome(within limit: Duration, _ operation: @escaping @Sendable () async throws -> Void) async -> Outcome {
        let (outcomes, sink) = AsyncStream.makeStream(of: Outcome.self)
        let command = Task {
            do {
                try await operation()
                sink.yield(.succeeded)
            } catch {
                sink.yield(.failed)
            }
        }
        let timer = Task {
            try? await Task.sleep(for: limit)
            sink.yield(.stillWaiting)
        }
        var iterator = outcomes.makeAsyncIterator()
        let first = await iterator.next() ?? .stillWaiting
        timer.cancel()
        if first != .stillWaiting { _ = await command.value }
        return first
    }

    @Test func largeBulkStringsArriveWhole() async throws {
        try await RedisServerProcess.with { server in
            // 4 MiB each way: on a loaded machine (the suite pinned to one core beside a build)
            // that took longer than the default 5 s command time-out once.
            let connection = try await RedisConnection.connect(to: RedisEndpoint(url: server.url), commandTimeout: .seconds(30))
            let big = String(repeating: "0123456789abcdef", count: 256 * 1024)  // 4 MiB, many reads
            try await connection.send(["SET", "big", big])
            let reply = try await connection.send(["GET", "big"])
            #expect(reply.string?.utf8.count == big.utf8.count)
            #expect(reply.string == big)
            #expect(try await connection.send(["STRLEN", "big"]) == .integer(big.utf8.count))
            await connection.close()
        }
    }

    @Test func errorRepliesAreTypedAndLeaveTheConnectionUsable() async throws {
        try await RedisServerProcess.with { server in
            let connection = try await RedisConnection.connect(to: RedisEndpoint(url: server.url))
            await #expect(throws: RedisServerError.self) { try await connection.send(["NOSUCHCOMMAND"]) }
            do {
                try await connection.send(["EVALSHA", String(repeating: "0", count: 40), "0"])
                Issue.record("EVALSHA of an unknown script succeeded")
            } catch let error as RedisServerError {
                #expect(error.code == "NOSCRIPT")
            }
            try await connection.send(["SET", "s", "text"])
            let replies = try await connection.pipeline([["INCR", "s"], ["PING"]])
            guard case .error(let message) = replies[0] else { throw RedisServerError("expected an error reply") }
            #expect(message.hasPrefix("ERR"))
            #expect(replies[1] == .simpleString("PONG"))
            await connection.close()
        }
    }

    @Test func authAndSelectFromTheURL() async throws {
        let port = try RedisServerProcess.freePort()
        try await RedisServerProcess.with(tcpPort: port, extraArguments: ["--requirepass", "s3cret"]) { _ in
            let connection = try await RedisConnection.connect(to: RedisEndpoint(url: "redis://:s3cret@127.0.0.1:\(port)/3"))
            try await connection.send(["SET", "where", "db3"])
            try await connection.send(["SELECT", "0"])
            #expect(try await connection.send(["GET", "where"]) == .null)
            try await connection.send(["SELECT", "3"])
            #expect(try await connection.send(["GET", "where"]).string == "db3")
            await connection.close()

            await #expect(throws: RedisConnectionError.self) {
                try await RedisConnection.connect(to: RedisEndpoint(url: "redis://:wrong@127.0.0.1:\(port)"))
            }
        }
    }

    @Test func clientReconnectsAfterTheServerRestarts() async throws {
        try await RedisServerProcess.with { server in
            let client = RedisClient(endpoint: try RedisEndpoint(url: server.url))
            #expect(try await client.send(["PING"]) == .simpleString("PONG"))
            try await server.restart()
            // The old connection is gone; failures are connection errors, never a hang, and the
            // client comes back by itself within its back-off.
            var recovered = false
            for _ in 0..<100 {
                do {
                    recovered = try await client.send(["PING"]) == .simpleString("PONG")
                    break
                } catch is RedisConnectionError {
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            #expect(recovered)
            await client.close()
        }
    }

    /// A command goes over the connection of the event loop it is sent from: two loops, two
    /// connections. One killed on the server is replaced on its loop's next command, while the
    /// other loop's connection stays as it was.
    @Test func eachEventLoopSendsOverAConnectionOfItsOwn() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        try await RedisServerProcess.with { server in
            let client = RedisClient(endpoint: try RedisEndpoint(url: server.url), group: group)
            let loops = Array(group.makeIterator())
            // The id of the server connection a command from `loop` used.
            func connectionID(from loop: any EventLoop) async throws -> Int? {
                try await Task(executorPreference: EventLoopExecutor(loop)) { try await client.send(["CLIENT", "ID"]).int }.value
            }
            let first = [try await connectionID(from: loops[0]), try await connectionID(from: loops[1])]
            #expect(first[0] != nil && first[1] != nil && first[0] != first[1])
            #expect(try await connectionID(from: loops[0]) == first[0], "a loop keeps its connection")
            try await client.send(["CLIENT", "KILL", "ID", String(first[1]!)])
            var replaced: Int?
            for _ in 0..<100 where replaced == nil {
                do { replaced = try await connectionID(from: loops[1]) } catch is RedisConnectionError { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(replaced != nil && replaced != first[1] && replaced != first[0])
            #expect(try await connectionID(from: loops[0]) == first[0])
            await client.close()
        }
        try await group.shutdownGracefully()
    }

    /// A server that takes connections but answers nothing (a stopped process) fails the
    /// identity check of a new connection as a failed connect: the caller's command was never
    /// written, so a cluster's router may send it to the slot's new primary rather than answer
    /// 503 as for a command that may have run.
    @Test func aServerThatNeverAnswersFailsTheConnectNotTheCommand() async throws {
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { $0.eventLoop.makeSucceededVoidFuture() }  // reads and drops
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(silent.localAddress?.port)
        let client = RedisServerClient(
            endpoint: try RedisEndpoint(url: "redis://127.0.0.1:\(port)"), commandTimeout: .milliseconds(300),
            identityObserver: IdentityObserver())
        let error = await #expect(throws: RedisConnectionError.self) { try await client.send(["SET", "k", "v"]) }
        #expect(error?.neverSent == true, "\(String(describing: error))")
        await client.close()
        try await silent.close()
    }

    /// A retired connection (a cluster server that became a primary again) closes once what
    /// was written on it has its reply, so that no command on it fails as maybe-sent.
    @Test func aConnectionClosedWhenIdleFinishesWhatItWasSent() async throws {
        try await RedisServerProcess.with { server in
            let connection = try await RedisConnection.connect(to: try RedisEndpoint(url: server.url))
            let blocked = connection.sendRaw(["BLPOP", "nothing", "0.3"])  // answers after 0.3 s
            connection.closeAfterPendingReplies()
            let later = connection.sendRaw(["PING"])
            #expect(try await blocked.get() == .null)
            #expect(try await later.get() == .simpleString("PONG"))
            try await connection.closeFuture.get()
        }
    }

    @Test func commandsFailFastWhileRedisIsDown() async throws {
        try await RedisServerProcess.with { server in
            let client = RedisClient(endpoint: try RedisEndpoint(url: server.url))
            try await client.send(["PING"])
            await server.kill()
            for _ in 0..<3 {
                await #expect(throws: RedisConnectionError.self) { try await client.send(["PING"]) }
            }
            await client.close()
        }
    }

    @Test func subscriberDeliversMessagesAndResubscribesAfterRestart() async throws {
        try await RedisServerProcess.with { server in
            let endpoint = try RedisEndpoint(url: server.url)
            let client = RedisClient(endpoint: endpoint)
            let subscriber = RedisSubscriber(client: client)
            let running = Task { await subscriber.run() }
            defer { running.cancel() }
            await subscriber.waitUntilConnected()
            try await subscriber.subscribe("news")
            try await subscriber.subscribe("news")  // a second reference: no second SUBSCRIBE needed
            var messages = subscriber.messages.makeAsyncIterator()

            #expect(try await client.send(["SPUBLISH", "news", "first"]) == .integer(1))
            let first = await messages.next()
            #expect(first?.channel == "news")
            #expect(first.map { String(buffer: $0.payload) } == "first")

            try await server.restart()
            // Wait until the subscriber is back and subscribed again.
            var receivers = 0
            for _ in 0..<100 where receivers == 0 {
                try await Task.sleep(for: .milliseconds(50))
                receivers = (try? await client.send(["SPUBLISH", "news", "again"]).int) ?? 0
            }
            #expect(receivers == 1)
            #expect(await messages.next().map { String(buffer: $0.payload) } == "again")

            subscriber.unsubscribe("news")
            #expect(try await client.send(["PUBSUB", "SHARDNUMSUB", "news"]).array?[1] == .integer(1))
            subscriber.unsubscribe("news")
            var remaining = 1
            for _ in 0..<50 where remaining != 0 {
                remaining = try await client.send(["PUBSUB", "SHARDNUMSUB", "news"]).array?[1].int ?? -1
                if remaining != 0 { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(remaining == 0)
            await client.close()
        }
    }
}

@Suite("hiredis reader and formatter")
struct ProtocolTests {
    @Test func readerParsesRepliesFedOneByteAtATime() throws {
        let wire = "+OK\r\n-ERR bad\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*3\r\n$1\r\na\r\n:7\r\n*1\r\n+in\r\n"
        let reader = HiredisReader()
        var replies: [RESPValue] = []
        for byte in wire.utf8 {
            try reader.feed(ByteBuffer(bytes: [byte]))
            while let reply = try reader.next() { replies.append(reply) }
        }
        #expect(replies == [
            .simpleString("OK"), .error("ERR bad"), .integer(42), .bulkString(ByteBuffer(string: "hello")), .null,
            .array([.bulkString(ByteBuffer(string: "a")), .integer(7), .array([.simpleString("in")])]),
        ])
    }

    @Test func readerRejectsGarbage() throws {
        let reader = HiredisReader()
        try? reader.feed(ByteBuffer(string: "?what\r\n"))
        #expect(throws: RedisConnectionError.self) { try reader.next() }
    }

    @Test func formatterWritesRESPArrays() {
        var buffer = ByteBuffer()
        CommandEncoder.encode(["SET", "k", "two words", ""], into: &buffer)
        #expect(String(buffer: buffer) == "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$9\r\ntwo words\r\n$0\r\n\r\n")
    }

    @Test func urlsParse() throws {
        #expect(try RedisEndpoint(url: "redis://localhost") == RedisEndpoint(address: .tcp(host: "localhost", port: 6379)))
        #expect(
            try RedisEndpoint(url: "redis://:p%40ss@10.0.0.1:6380/2")
                == RedisEndpoint(address: .tcp(host: "10.0.0.1", port: 6380), password: "p@ss", database: 2))
        #expect(
            try RedisEndpoint(url: "redis://user:pw@[::1]:7000")
                == RedisEndpoint(address: .tcp(host: "::1", port: 7000), username: "user", password: "pw"))
        #expect(try RedisEndpoint(url: "unix:///tmp/r.sock?db=1") == RedisEndpoint(address: .unix(path: "/tmp/r.sock"), database: 1))
        for bad in ["http://x", "redis://host:notaport", "redis://:pw@", "unix://relative.sock", "redis://h/x"] {
            #expect(throws: RedisEndpoint.InvalidURL.self) { try RedisEndpoint(url: bad) }
        }
        #expect(!"\(try RedisEndpoint(url: "redis://:secret@h:1"))".contains("secret"))
    }
}

@Suite("Hash slots, as Redis Cluster computes them")
struct HashSlotTests {
    /// Values from the cluster specification and `CLUSTER KEYSLOT` on Redis 7.0.
    @Test func slotsMatchTheSpecification() {
        #expect(HashSlot.of("123456789") == 0x31C3 % HashSlot.count)
        #expect(HashSlot.of("somekey") == 11058)
        #expect(HashSlot.of("foo") == 12182)
        #expect(HashSlot.of("foo{hash_tag}") == 2515)
        #expect(HashSlot.of("bar{hash_tag}") == 2515)
    }

    @Test func onlyTheFirstNonEmptyTagCounts() {
        #expect(HashSlot.of("{user1000}.following") == HashSlot.of("{user1000}.followers"))
        #expect(HashSlot.of("foo{}{bar}") != HashSlot.of("bar"))  // an empty first tag: the whole name
        #expect(HashSlot.of("foo{{bar}}zap") == HashSlot.of("{bar"))
        #expect(HashSlot.of("foo{bar}{zap}") == HashSlot.of("bar"))
    }
}
