import NIOCore
import NIOHTTP1
import NIOPosix

/// A client of Switchboard's public HTTP API (the API of the original article), for tests and
/// the load tool: it speaks only HTTP, so it drives any server with that API.
public struct SignalingClient: Sendable {
    public let host: String
    public let port: Int
    let group: EventLoopGroup
    /// If set, a response (an event stream too) that sends nothing for this long is closed.
    public let idleTimeout: TimeAmount?

    public init(
        host: String = "127.0.0.1", port: Int, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton, idleTimeout: TimeAmount? = nil
    ) {
        self.host = host
        self.port = port
        self.group = group
        self.idleTimeout = idleTimeout
    }

    /// Sends a request and collects the whole response.
    public func request(
        _ method: HTTPMethod, _ path: String, token: String? = nil, headers: [(String, String)] = [], body: String? = nil
    ) async throws -> HTTPResult {
        var allHeaders = headers + [("Connection", "close")]
        if let token { allHeaders.append(("Authorization", "Bearer \(token)")) }
        if body != nil { allHeaders.append(("Content-Type", "application/json")) }
        let exchange = try await HTTPExchange.start(
            host: host, port: port, method: method, path: path, headers: allHeaders, body: body, group: group, idleTimeout: idleTimeout)
        // A server that never answers ends the exchange (as a closed connection), never hangs it.
        let channel = exchange.channel
        let deadline = channel.eventLoop.scheduleTask(in: .seconds(30)) { channel.close(promise: nil) }
        defer {
            deadline.cancel()
            channel.close(promise: nil)
        }
        var parts = exchange.parts.makeAsyncIterator()
        guard let result = await Self.response(from: &parts) else { throw SignalingClientError.connectionClosed }
        return result
    }

    /// The next whole response on `parts` (the parts after `head`, if it was read already); nil
    /// if the connection ends first.
    private static func response(
        from parts: inout AsyncStream<HTTPClientResponsePart>.AsyncIterator, head: HTTPResponseHead? = nil
    ) async -> HTTPResult? {
        var head = head
        var bytes: [UInt8] = []
        while let part = await parts.next() {
            switch part {
            case .head(let first): head = first
            case .body(let buffer): bytes += buffer.readableBytesView
            case .end:
                guard let head else { return nil }
                return HTTPResult(status: Int(head.status.code), headers: head.headers, body: String(decoding: bytes, as: UTF8.self))
            }
        }
        return nil
    }

    /// `POST /access`: a token for a new peer.
    public func access(username: String) async throws -> String {
        let result = try await request(.POST, "/access", body: Self.accessBody(username))
        guard result.status == 200, let token = Self.token(in: result.body) else {
            throw SignalingClientError.unexpectedStatus(result.status, result.body)
        }
        return token
    }

    private static func accessBody(_ username: String) -> String { #"{"username":"\#(username)"}"# }

    /// The token of `{"token":"…"}`.
    private static func token(in body: String) -> String? {
        body.split(separator: "\"").dropFirst(3).first.map(String.init)
    }

    /// `POST /access`, then `GET /connect` with that token on the same keep-alive connection, as
    /// a page does that fetches its token and then opens an EventSource: the stream goes out on
    /// a connection that has answered another request first.
    public func accessThenConnect(username: String) async throws -> (token: String, stream: EventStream) {
        let exchange = try await HTTPExchange.start(
            host: host, port: port, method: .POST, path: "/access", headers: [("Content-Type", "application/json")],
            body: Self.accessBody(username), group: group, idleTimeout: idleTimeout)
        var parts = exchange.parts.makeAsyncIterator()
        let channel = exchange.channel
        let deadline = channel.eventLoop.scheduleTask(in: .seconds(30)) { channel.close(promise: nil) }
        let result = await Self.response(from: &parts)
        deadline.cancel()
        guard let result, result.status == 200, let token = Self.token(in: result.body) else {
            channel.close(promise: nil)
            throw SignalingClientError.unexpectedStatus(result?.status ?? 0, result?.body ?? "")
        }
        try await exchange.send(
            method: .GET, path: "/connect?token=\(token)", headers: [("Accept", "text/event-stream")], body: nil, host: host, port: port)
        return (token, try await stream(on: exchange, reading: parts))
    }

    /// `GET /connect`: opens the event stream. Returns once the response head arrived with 200.
    public func connect(token: String, useQueryToken: Bool = true, lastEventID: String? = nil) async throws -> EventStream {
        var headers = [("Accept", "text/event-stream")]
        if !useQueryToken { headers.append(("Authorization", "Bearer \(token)")) }
        if let lastEventID { headers.append(("Last-Event-ID", lastEventID)) }
        let path = useQueryToken ? "/connect?token=\(token)" : "/connect"
        let exchange = try await HTTPExchange.start(
            host: host, port: port, method: .GET, path: path, headers: headers, body: nil, group: group, idleTimeout: idleTimeout)
        return try await stream(on: exchange, reading: exchange.parts.makeAsyncIterator())
    }

    /// The event stream whose request went out on `exchange`, once its head came with 200.
    private func stream(
        on exchange: HTTPExchange, reading parts: AsyncStream<HTTPClientResponsePart>.AsyncIterator
    ) async throws -> EventStream {
        var parts = parts
        let channel = exchange.channel
        let deadline = channel.eventLoop.scheduleTask(in: .seconds(30)) { channel.close(promise: nil) }
        defer { deadline.cancel() }
        guard case .head(let head) = await parts.next() else {
            exchange.channel.close(promise: nil)
            throw SignalingClientError.connectionClosed
        }
        guard head.status == .ok else {
            // Read to the answer's end, not the connection's: it stays open (keep-alive).
            let body = await Self.response(from: &parts, head: head)?.body ?? ""
            exchange.channel.close(promise: nil)
            throw SignalingClientError.unexpectedStatus(Int(head.status.code), body)
        }
        return EventStream(channel: exchange.channel, parts: parts)
    }
}

/// An open event stream: read events with `next()`, end it with `close()`.
public final class EventStream: @unchecked Sendable {
    private let channel: Channel
    private var parts: AsyncStream<HTTPClientResponsePart>.AsyncIterator
    private var parser = SSEParser()
    private var ready: [ServerSentEvent] = []

    init(channel: Channel, parts: AsyncStream<HTTPClientResponsePart>.AsyncIterator) {
        self.channel = channel
        self.parts = parts
    }

    /// The next event, or nil when the server ended the stream. Not for concurrent use.
    public func next() async -> ServerSentEvent? {
        while ready.isEmpty {
            guard let part = await parts.next() else { return nil }
            if case .body(let buffer) = part { ready += parser.feed(buffer.readableBytesView) }
        }
        return ready.removeFirst()
    }

    /// The next event that is not a `ping`.
    public func nextSignal() async -> ServerSentEvent? {
        while let event = await next() {
            if event.event != "ping" { return event }
        }
        return nil
    }

    /// The next non-`ping` event within `timeout`; nil if none came (the stream is then closed).
    public func nextSignal(timeout: Duration) async -> ServerSentEvent? {
        let event = await withTaskGroup(of: ServerSentEvent?.self) { group in
            group.addTask { await self.nextSignal() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        if event == nil { close() }
        return event
    }

    public func close() {
        channel.close(promise: nil)
    }
}
