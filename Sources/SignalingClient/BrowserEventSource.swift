import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A client that behaves as a browser's EventSource does (WHATWG HTML, server-sent events), to
/// test what a browser would live through:
/// - it reconnects by itself after a network error or after the stream ended, once the
///   `retry:` delay the server last sent has passed (3 s until one is sent), and sends the
///   id of the last event it received as `Last-Event-ID`;
/// - any answer but 200 with `Content-Type: text/event-stream` makes it fail for good
///   ("fail the connection": readyState CLOSED, no reconnection).
///
/// `run()` drives it until it fails or the task is cancelled; what happens comes out of
/// `occurrences`, in order.
public final class BrowserEventSource: Sendable {
    public enum Occurrence: Sendable, Equatable {
        /// A stream was established (the `open` event).
        case open
        case message(ServerSentEvent)
        /// The stream dropped or could not be made; the source reconnects (the `error` event,
        /// readyState CONNECTING).
        case error
        /// The source failed for good: this answer was not 200 `text/event-stream` (the
        /// `error` event, readyState CLOSED).
        case failed(status: Int)
    }

    public let occurrences: AsyncStream<Occurrence>
    private let sink: AsyncStream<Occurrence>.Continuation
    private let client: SignalingClient
    private let path: String
    private let initialReconnectionTime: Int
    private let lastEventIDString = NIOLockedValueBox("")

    /// - Parameter path: what the page passed to `new EventSource(…)`, e.g. `/connect?token=T`.
    public init(client: SignalingClient, path: String, initialReconnectionTime: Int = 3000) {
        self.client = client
        self.path = path
        self.initialReconnectionTime = initialReconnectionTime
        (occurrences, sink) = AsyncStream.makeStream()
    }

    /// The id the source sends as `Last-Event-ID` when it reconnects ("" before any).
    public var lastEventID: String { lastEventIDString.withLockedValue { $0 } }

    /// Connects, and reconnects, until the source fails or the task is cancelled.
    public func run() async {
        var reconnectionTime = initialReconnectionTime
        defer { sink.finish() }
        while !Task.isCancelled {
            switch await connectOnce(reconnectionTime: &reconnectionTime) {
            case .failed(let status):
                sink.yield(.failed(status: status))
                return
            case .dropped:
                sink.yield(.error)
            }
            guard (try? await Task.sleep(for: .milliseconds(reconnectionTime))) != nil else { return }
        }
    }

    private enum Ending { case dropped, failed(Int) }

    private func connectOnce(reconnectionTime: inout Int) async -> Ending {
        var headers = [("Accept", "text/event-stream"), ("Cache-Control", "no-cache")]
        let last = lastEventID
        if !last.isEmpty { headers.append(("Last-Event-ID", last)) }
        guard
            let exchange = try? await HTTPExchange.start(
                host: client.host, port: client.port, method: .GET, path: path, headers: headers, body: nil, group: client.group,
                idleTimeout: client.idleTimeout)
        else { return .dropped }
        defer { exchange.channel.close(promise: nil) }
        return await withTaskCancellationHandler {
            var parts = exchange.parts.makeAsyncIterator()
            guard case .head(let head) = await parts.next() else { return .dropped }
            let contentType = head.headers["Content-Type"].first?.lowercased() ?? ""
            guard head.status == .ok, contentType.hasPrefix("text/event-stream") else { return .failed(Int(head.status.code)) }
            sink.yield(.open)
            var parser = SSEParser()
            while let part = await parts.next() {
                // The response ended (the connection itself may stay open for another request).
                if case .end = part { break }
                guard case .body(let buffer) = part else { continue }
                for event in parser.feed(buffer.readableBytesView) {
                    if let id = event.id { lastEventIDString.withLockedValue { $0 = id } }
                    sink.yield(.message(event))
                }
                if let time = parser.reconnectionTime { reconnectionTime = time }
            }
            return .dropped
        } onCancel: {
            exchange.channel.close(promise: nil)
        }
    }
}
