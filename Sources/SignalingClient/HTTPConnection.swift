import NIOCore
import NIOHTTP1
import NIOPosix

/// A response: status, headers and, for ordinary requests, the whole body.
public struct HTTPResult: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: String
}

public enum SignalingClientError: Error, Sendable, Equatable {
    case connectionClosed
    case unexpectedStatus(Int, String)
}

/// Hands the parts of one HTTP response to an AsyncStream.
final class ResponsePartForwarder: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    let sink: AsyncStream<HTTPClientResponsePart>.Continuation

    init(sink: AsyncStream<HTTPClientResponsePart>.Continuation) { self.sink = sink }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        sink.yield(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        sink.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// How a connection's requests are written.
public enum RequestEncoding: Sendable {
    /// As `HTTPClientRequestPart`s, by NIO's encoder.
    case parts
    /// Already encoded, each whole request the body part after a head (see `EncodedRequests`).
    case encoded
}

/// A TCP connection with the HTTP/1.1 client handlers, then the handler `last` makes. With an
/// `idleTimeout`, the connection closes once it has read nothing for that long.
public func connectHTTP<Handler: ChannelInboundHandler>(
    host: String, port: Int, group: EventLoopGroup, idleTimeout: TimeAmount? = nil, requests: RequestEncoding = .parts,
    last: @escaping @Sendable () -> Handler
) async throws -> Channel where Handler.InboundIn == HTTPClientResponsePart {
    try await ClientBootstrap(group: group)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .connectTimeout(.seconds(5))
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let idleTimeout {
                    try channel.pipeline.syncOperations.addHandlers(IdleStateHandler(readTimeout: idleTimeout), CloseWhenIdle())
                }
                switch requests {
                case .parts: try channel.pipeline.syncOperations.addHTTPClientHandlers()
                case .encoded: try channel.pipeline.syncOperations.addHandlers(EncodedRequests(), ByteToMessageHandler(HTTPResponseDecoder()))
                }
                try channel.pipeline.syncOperations.addHandler(last())
            }
        }
        .connect(host: host, port: port).get()
}

/// Writes requests that come already encoded, each as the body part of an
/// `HTTPClientRequestPart` after a head part. The head goes out to the socket as nothing: it
/// passes the response decoder only to tell it that a request went out (it refuses a response
/// it saw no request for) and with which method (a `HEAD`'s response has no body). The load
/// tool's relays: a request built once as bytes costs less than NIO's encoder from parts.
public final class EncodedRequests: ChannelOutboundHandler, Sendable {
    public typealias OutboundIn = HTTPClientRequestPart
    public typealias OutboundOut = ByteBuffer

    public static let post = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/")
    public static let get = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")

    public init() {}

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .body(.byteBuffer(let bytes)): context.write(wrapOutboundOut(bytes), promise: promise)
        case .body(.fileRegion): promise?.fail(ChannelError.operationUnsupported)
        case .head, .end: promise?.succeed()
        }
    }
}

/// Closes the connection when `IdleStateHandler` says it has read nothing for too long.
final class CloseWhenIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

/// One HTTP/1.1 request on its own connection, with the response streamed back.
struct HTTPExchange {
    let channel: Channel
    let parts: AsyncStream<HTTPClientResponsePart>

    static func start(
        host: String, port: Int, method: HTTPMethod, path: String, headers: [(String, String)], body: String?,
        group: EventLoopGroup, idleTimeout: TimeAmount? = nil
    ) async throws -> HTTPExchange {
        let (parts, sink) = AsyncStream.makeStream(of: HTTPClientResponsePart.self)
        let channel = try await connectHTTP(host: host, port: port, group: group, idleTimeout: idleTimeout) {
            ResponsePartForwarder(sink: sink)
        }
        let exchange = HTTPExchange(channel: channel, parts: parts)
        try await exchange.send(method: method, path: path, headers: headers, body: body, host: host, port: port)
        return exchange
    }

    /// Writes a request on the connection (the next one after a response has ended).
    func send(method: HTTPMethod, path: String, headers: [(String, String)], body: String?, host: String, port: Int) async throws {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: "\(host):\(port)")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if let body {
            head.headers.add(name: "Content-Length", value: String(body.utf8.count))
        } else if method == .POST {
            head.headers.add(name: "Content-Length", value: "0")
        }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: body))), promise: nil) }
        try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
    }
}
