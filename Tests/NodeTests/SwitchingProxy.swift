import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RedisClient

/// A TCP proxy to Redis that can move every client connection to a new upstream connection
/// while keeping the client's connection open: what a client sees when a proxy fails over to
/// another server, with its subscriptions silently gone.
///
/// It reads RESP both ways, so that it moves a connection between whole commands, and passes
/// the old upstream's last replies back before any of the new one's: a client sees a live
/// connection that lost its subscriptions, never a garbled or reordered reply stream.
final class SwitchingProxy: Sendable {
    let port: Int
    private let server: Channel
    private let links: NIOLockedValueBox<[Link]>
    private let upstreamPort: NIOLockedValueBox<Int>

    static func start(upstreamPort initialPort: Int) async throws -> SwitchingProxy {
        let links = NIOLockedValueBox<[Link]>([])
        let upstreamPort = NIOLockedValueBox(initialPort)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.autoRead, value: true)
            .childChannelInitializer { client in
                let link = Link(client: client)
                links.withLockedValue { $0.append(link) }
                let ready = client.eventLoop.makeFutureWithTask { try await link.connectUpstream(port: upstreamPort.withLockedValue { $0 }) }
                return ready.flatMapThrowing { try client.pipeline.syncOperations.addHandler(ClientCommands(link: link)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return SwitchingProxy(server: server, links: links, port: server.localAddress!.port!, upstreamPort: upstreamPort)
    }

    private init(server: Channel, links: NIOLockedValueBox<[Link]>, port: Int, upstreamPort: NIOLockedValueBox<Int>) {
        self.server = server
        self.links = links
        self.port = port
        self.upstreamPort = upstreamPort
    }

    /// Gives every client a new upstream connection for what it sends from now on; each old
    /// one closes once it has answered what was sent to it. Clients notice nothing.
    func switchUpstreams() async throws {
        for link in links.withLockedValue({ $0 }) {
            try await link.connectUpstream(port: upstreamPort.withLockedValue { $0 })
        }
    }

    /// A failover as a virtual IP moving to another server does it: every connection drops,
    /// and new ones reach the server on `port`.
    func failOver(to port: Int) {
        upstreamPort.withLockedValue { $0 = port }
        let dropped = links.withLockedValue { links in
            defer { links = [] }
            return links
        }
        dropped.forEach { $0.close() }
    }

    func stop() {
        server.close(promise: nil)
        links.withLockedValue { $0 }.forEach { $0.close() }
    }

    /// One client connection and the upstream connections behind it.
    final class Link: Sendable {
        let client: Channel
        private let state = NIOLockedValueBox(State())

        private struct Upstream {
            let channel: Channel
            let generation: Int
            /// Replies still owed for the commands sent on it.
            var unanswered = 0
        }

        private struct State {
            var current: Upstream?
            /// The upstream being replaced: it answers what it was sent before the new one speaks.
            var draining: Upstream?
            /// The current upstream's replies, until the draining one is done.
            var held: [ByteBuffer] = []
            var generations = 0
        }

        init(client: Channel) { self.client = client }

        func connectUpstream(port: Int) async throws {
            let generation = state.withLockedValue { state in
                state.generations += 1
                return state.generations
            }
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UpstreamReplies(link: self, generation: generation)) }
                }
                .connect(host: "127.0.0.1", port: port).get()
            let closing = state.withLockedValue { state -> [Channel] in
                var closing: [Channel] = []
                if let draining = state.draining {
                    // Switched twice before it finished: what it still owed is lost.
                    closing.append(draining.channel)
                    state.draining = nil
                    flushHeld(&state)
                }
                if let current = state.current {
                    if current.unanswered > 0 { state.draining = current } else { closing.append(current.channel) }
                }
                state.current = Upstream(channel: channel, generation: generation)
                return closing
            }
            closing.forEach { $0.close(promise: nil) }
        }

        /// Sends one whole command to the current upstream.
        func forward(_ command: ByteBuffer, replies: Int) {
            state.withLockedValue { state in
                guard state.current != nil else { return }
                state.current!.unanswered += replies
                state.current!.channel.writeAndFlush(command, promise: nil)
            }
        }

        /// Passes on what an upstream sent: `value` answers `answers` commands (0 for a push).
        func received(_ value: ByteBuffer, answers: Int, from generation: Int) {
            let finished: Channel? = state.withLockedValue { state in
                if state.current?.generation == generation {
                    state.current!.unanswered -= answers
                    if state.draining != nil { state.held.append(value) } else { client.writeAndFlush(value, promise: nil) }
                    return nil
                }
                guard state.draining?.generation == generation else { return nil }  // closed already
                state.draining!.unanswered -= answers
                client.writeAndFlush(value, promise: nil)
                guard state.draining!.unanswered <= 0 else { return nil }
                defer { state.draining = nil }
                flushHeld(&state)
                return state.draining!.channel
            }
            finished?.close(promise: nil)
        }

        /// Writes under the lock, so that replies reach the client in the order decided here.
        private func flushHeld(_ state: inout State) {
            for value in state.held { client.write(value, promise: nil) }
            client.flush()
            state.held = []
        }

        func close() {
            client.close(promise: nil)
            let upstreams = state.withLockedValue { [$0.current, $0.draining].compactMap { $0?.channel } }
            upstreams.forEach { $0.close(promise: nil) }
        }
    }

    /// Reads a client's commands whole and sends each to the link's current upstream.
    private final class ClientCommands: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let link: Link
        private let reader = HiredisReader()
        init(link: Link) { self.link = link }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            do {
                try reader.feed(bytes)
                while let command = try reader.next() {
                    link.forward(command.encoded(allocator: context.channel.allocator), replies: command.repliesOwed)
                }
            } catch {
                context.close(promise: nil)
            }
        }
    }

    /// Reads an upstream's replies and pushes whole, and passes each back to the link.
    private final class UpstreamReplies: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let link: Link
        let generation: Int
        private let reader = HiredisReader()
        init(link: Link, generation: Int) {
            self.link = link
            self.generation = generation
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            do {
                try reader.feed(bytes)
                while let reply = try reader.next() {
                    link.received(reply.encoded(allocator: context.channel.allocator), answers: reply.isPush ? 0 : 1, from: generation)
                }
            } catch {
                context.close(promise: nil)
            }
        }
    }
}

extension RESPValue {
    /// The value in RESP2, as Redis would send it.
    fileprivate func encoded(allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64)
        encode(into: &buffer)
        return buffer
    }

    private func encode(into buffer: inout ByteBuffer) {
        switch self {
        case .simpleString(let text): buffer.writeString("+\(text)\r\n")
        case .error(let message): buffer.writeString("-\(message)\r\n")
        case .integer(let value): buffer.writeString(":\(value)\r\n")
        case .bulkString(var bytes):
            buffer.writeString("$\(bytes.readableBytes)\r\n")
            buffer.writeBuffer(&bytes)
            buffer.writeString("\r\n")
        case .null: buffer.writeString("$-1\r\n")
        case .array(let elements):
            buffer.writeString("*\(elements.count)\r\n")
            for element in elements { element.encode(into: &buffer) }
        }
    }

    /// How many replies Redis owes for this command: one per channel for (un)subscribing.
    fileprivate var repliesOwed: Int {
        guard let parts = array, let name = parts.first?.string?.uppercased() else { return 1 }
        let perChannel: Set = ["SUBSCRIBE", "SSUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "SUNSUBSCRIBE", "PUNSUBSCRIBE"]
        return perChannel.contains(name) ? max(parts.count - 1, 1) : 1
    }

    /// A message pushed to a subscriber, which answers no command.
    fileprivate var isPush: Bool {
        guard let kind = array?.first?.string else { return false }
        return kind == "message" || kind == "smessage" || kind == "pmessage"
    }
}
