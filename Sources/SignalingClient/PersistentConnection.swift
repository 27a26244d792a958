import NIOCore
import NIOHTTP1
import NIOPosix

/// Collects whole responses and hands them, in order, to the requests waiting for them.
final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private var waiting = CircularBuffer<EventLoopPromise<HTTPResult>>()
    private var current: HTTPResult?
    private var body: ByteBuffer?

    func enqueue(_ promise: EventLoopPromise<HTTPResult>) { waiting.append(promise) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            current = HTTPResult(status: Int(head.status.code), headers: head.headers, body: "")
            body = nil
        case .body(var part):
            if body == nil { body = part } else { body!.writeBuffer(&part) }
        case .end:
            guard var result = current, let promise = waiting.popFirst() else { return }
            result.body = body.map { String(buffer: $0) } ?? ""
            current = nil
            promise.succeed(result)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        while let promise = waiting.popFirst() { promise.fail(SignalingClientError.connectionClosed) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// One keep-alive HTTP/1.1 connection for many requests (the load tool's senders). Requests
/// may be issued back to back; responses come back in order.
public final class PersistentConnection: Sendable {
    private let channel: Channel
    private let collector: NIOLoopBound<ResponseCollector>
    public let host: String
    public let port: Int

    public static func connect(
        host: String = "127.0.0.1", port: Int, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> PersistentConnection {
        let channel = try await connectHTTP(host: host, port: port, group: group) { ResponseCollector() }
        let collector = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ResponseCollector.self), eventLoop: channel.eventLoop)
        }.get()
        return PersistentConnection(channel: channel, collector: collector, host: host, port: port)
    }

    private init(channel: Channel, collector: NIOLoopBound<ResponseCollector>, host: String, port: Int) {
        self.channel = channel
        self.collector = collector
        self.host = host
        self.port = port
    }

    public func request(_ method: HTTPMethod, _ path: String, token: String? = nil, body: String? = nil) async throws -> HTTPResult {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: "\(host):\(port)")
        if let token { head.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let bytes = body.map { ByteBuffer(string: $0) }
        head.headers.add(name: "Content-Length", value: String(bytes?.readableBytes ?? 0))
        if bytes != nil { head.headers.add(name: "Content-Type", value: "application/json") }
        let promise = channel.eventLoop.makePromise(of: HTTPResult.self)
        let (collector, channel, requestHead) = (collector, channel, head)
        channel.eventLoop.execute {
            guard channel.isActive else { return promise.fail(SignalingClientError.connectionClosed) }
            collector.value.enqueue(promise)
            channel.write(HTTPClientRequestPart.head(requestHead), promise: nil)
            if let bytes { channel.write(HTTPClientRequestPart.body(.byteBuffer(bytes)), promise: nil) }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        // A server that never answers fails the request (the connection closes), never hangs it.
        let deadline = channel.eventLoop.scheduleTask(in: .seconds(30)) { channel.close(promise: nil) }
        defer { deadline.cancel() }
        return try await promise.futureResult.get()
    }

    public func close() async {
        try? await channel.close()
    }
}
