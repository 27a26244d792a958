import Coordinator
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import RedisClient

/// What `GET /connect` decides, apart from the connection it is served on (`EventStreamHandler`):
/// who may open a stream, the answer's head, and opening the peer's stream through an outage.
///
/// It is refused (non-200) only for what retrying cannot mend: an origin not allowed (403), no
/// token (401), a bad one (403), no `Accept: text/event-stream` (406). A browser's
/// EventSource treats any answer but 200 `text/event-stream` as final: it closes for good and
/// never reconnects. So whatever is transient happens inside the stream. While Redis is
/// unreachable or the nodes are putting back what it lost, the stream is held open, kept alive
/// with comment lines (which leave the browser's Last-Event-ID alone), and starts with
/// `connected` once the node can serve it. Past `openWait`, or when the node stops, it ends
/// with a `retry:` delay instead, and the browser comes back by itself.
struct EventStreamEndpoint: Sendable {
    let coordinator: Coordinator
    let tokens: TokenAuthority
    /// The origin check and the headers of its answers.
    let answers: DirectAnswers
    let logger: Logger

    /// How long a stream is held while the node cannot open it, before it ends with `retry:`.
    static let openWait = Duration.seconds(15)
    /// Time between comment lines on a held stream (more while one attempt waits on Redis, up
    /// to its command time-out): proxies close connections idle for long.
    static let keepAliveInterval = Duration.seconds(5)
    /// How long the last bytes of a stream the node ends (a replaced stream's `replaced`
    /// event, the end of a stream as the node stops) may take to reach a client before the node
    /// resets the connection.
    static let finalWriteDeadline = TimeAmount.seconds(5)
    /// The kernel send buffer of a stream's connection (Linux keeps twice this). Left to grow,
    /// it reaches megabytes behind a client that stops reading; what the node queues itself is
    /// bounded by `PeerStream.Limits`.
    static let sendBufferBytes = 64 << 10

    /// What a browser waits before it reconnects, in milliseconds, with jitter so that a fleet's
    /// browsers do not all come back in the same millisecond: about a second after a drop
    /// (well inside the grace period), one to three seconds after a held stream gave up.
    static func reconnectDelay() -> Int { Int.random(in: 800...1200) }
    static func retryLaterDelay() -> Int { Int.random(in: 1000...3000) }

    static let replacedEvent = StreamEvent(
        name: "replaced", data: ByteBuffer(string: #"{"reason":"another stream of this peer opened"}"#))

    /// Whether a request is this endpoint's: `GET /connect`, with or without a query.
    static func serves(_ request: HTTPRequest) -> Bool {
        guard request.method == .get, let path = request.path, path.hasPrefix("/connect") else { return false }
        let rest = path.utf8.dropFirst("/connect".utf8.count)
        return rest.isEmpty || rest.first == UInt8(ascii: "?")
    }

    /// Who may open the stream, and where it resumes; or the error to answer with.
    struct Admission: Sendable {
        let identity: TokenAuthority.Identity
        let lastEvent: EventCursor?
    }

    func admit(_ request: HTTPRequest) async -> Result<Admission, HTTPError> {
        if answers.refusesOrigin(of: request) { return .failure(APIError.originNotAllowed) }
        let uri = URI(request.path ?? "/")
        let identity: TokenAuthority.Identity
        do {
            identity = try await tokens.authenticate(request.headerFields, uri)
        } catch {
            return .failure(error as? HTTPError ?? APIError.invalidToken)
        }
        guard request.headerFields[values: .accept].contains(where: { $0.contains("text/event-stream") }) else {
            return .failure(APIError.notEventStream)
        }
        return .success(Admission(identity: identity, lastEvent: lastEvent(request.headerFields, uri)))
    }

    /// Where the client asks to resume: `Last-Event-ID` (an EventSource sends it when it
    /// reconnects), else `?lastEventId=` (a page that opens a new EventSource, with a fresh
    /// token, to go on where the old one stopped). An id the node cannot use, from an older
    /// version for example, starts a fresh session: a 400 would end the EventSource for good.
    private func lastEvent(_ headers: HTTPFields, _ uri: URI) -> EventCursor? {
        let header = headers[HTTPField.Name("Last-Event-ID")!].flatMap { $0.isEmpty ? nil : $0 }
        guard let text = header ?? uri.queryParameters["lastEventId"].map(String.init), !text.isEmpty else { return nil }
        guard let cursor = EventCursor(lastEventID: text) else {
            coordinator.metrics.resumed("unrecognized")
            return nil
        }
        return cursor
    }

    /// Tries once to open the stream, before the answer's head goes out: a client that joins
    /// as soon as its stream is open (rather than on `connected`) finds its session there.
    func openAtOnce(_ admission: Admission, onEnd: @escaping @Sendable (PeerStream.EndReason) -> Void) async -> PeerStream? {
        let stream = try? await openStream(admission, onEnd: onEnd)
        if stream != nil { logOpened(admission) }
        return stream
    }

    /// Opens the peer's stream after the first try failed, waiting through an outage for up to
    /// `openWait` and calling `keepAlive` now and then; nil if it could not, or was cancelled
    /// (the client went away, or the node is stopping).
    func open(
        _ admission: Admission, onEnd: @escaping @Sendable (PeerStream.EndReason) -> Void, keepAlive: @Sendable () -> Void
    ) async -> PeerStream? {
        let user = admission.identity.user
        var commented: ContinuousClock.Instant?
        do {
            let stream = try await Outage.retrying(until: .now + Self.openWait) {
                try Task.checkCancellation()
                return try await openStream(admission, onEnd: onEnd)
            } pause: { delay in
                if commented.map({ .now - $0 >= Self.keepAliveInterval }) ?? true {
                    keepAlive()
                    commented = .now
                }
                try await Task.sleep(for: min(delay, Self.keepAliveInterval))
            }
            logOpened(admission)
            return stream
        } catch is RedisConnectionError {
            logger.warning("stream not opened: Redis unavailable; the client will retry", metadata: ["peer": "\(user.id)"])
        } catch {
            if !(error is CancellationError || Task.isCancelled) {
                logger.error("stream not opened; the client will retry", metadata: ["peer": "\(user.id)", "error": "\(error)"])
            }
        }
        return nil
    }

    private func openStream(_ admission: Admission, onEnd: @escaping @Sendable (PeerStream.EndReason) -> Void) async throws -> PeerStream {
        try await coordinator.openStream(
            for: admission.identity.user, granted: admission.identity.rooms, resumingAfter: admission.lastEvent, onEnd: onEnd)
    }

    private func logOpened(_ admission: Admission) {
        logger.info("stream opened", metadata: ["peer": "\(admission.identity.user.id)", "resuming": "\(admission.lastEvent != nil)"])
    }

    // MARK: Answers

    /// The head of a stream: 200 `text/event-stream`, never cached or buffered. The connection
    /// closes when the stream ends.
    func streamHead(for request: HTTPRequest) -> HTTPResponse {
        var headers = answers.headers(for: request)
        headers[.connection] = "close"
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"  // proxies must not buffer the stream
        return HTTPResponse(status: .ok, headerFields: headers)
    }

    /// The stream's head as it goes on the wire, where NIO's encoder is not (see
    /// `EventStreamHandler`): no `Transfer-Encoding`, the body ends with the connection. HTTP
    /// types keep names and values free of line breaks.
    func streamHeadBytes(for request: HTTPRequest) -> ByteBuffer {
        var bytes = ByteBuffer(string: "HTTP/1.1 200 OK\r\n")
        for field in streamHead(for: request).headerFields {
            bytes.writeString(field.name.rawName)
            bytes.writeString(": ")
            bytes.writeString(field.value)
            bytes.writeString("\r\n")
        }
        bytes.writeString("\r\n")
        return bytes
    }
}
