import Coordinator
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RedisClient
import ServiceLifecycle

/// The answer to a `GET /connect` that passed every permanent check (token, `Accept`).
///
/// A browser's EventSource treats any answer but 200 `text/event-stream` as final: it closes
/// for good and never reconnects. So whatever is transient happens inside the stream. While
/// Redis is unreachable or the nodes are putting back what it lost, the stream is held open,
/// kept alive with comment lines (which leave the browser's Last-Event-ID alone), and starts
/// with `connected` once the node can serve it. Past `openWait`, or when the node stops, it
/// ends with a `retry:` delay instead, and the browser comes back by itself.
struct EventStreamResponse: Sendable {
    let coordinator: Coordinator
    let user: PeerUser
    /// The rooms the token grants: a resumed session keeps only those.
    let rooms: RoomGrants
    /// Where to resume the peer's session; nil for a fresh one.
    let lastEvent: EventCursor?
    let logger: Logger

    /// How long a stream is held while the node cannot open it, before it ends with `retry:`.
    static let openWait = Duration.seconds(15)
    /// Time between comment lines on a held stream (more while one attempt waits on Redis, up
    /// to its command time-out): proxies close connections idle for long.
    static let keepAliveInterval = Duration.seconds(5)
    /// How long the last bytes of a stream the node ends (a replaced stream's `replaced`
    /// event, the end of a stream as the node stops) may take to reach a client before the node
    /// closes the connection.
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

    private static let replacedEvent = StreamEvent(
        name: "replaced", data: ByteBuffer(string: #"{"reason":"another stream of this peer opened"}"#))

    /// Opens the stream before the response head goes out, as a rule: a client that joins as
    /// soon as its stream is open (rather than on `connected`) finds its session there. Only
    /// if Redis is unavailable does the head go out first, with the stream held.
    func response(to request: Request, on connection: any Channel) async -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"  // proxies must not buffer the stream
        _ = connection.setOption(ChannelOptions.socketOption(.so_sndbuf), value: Self.sendBufferBytes)
        // A stream the node ends may have a write stuck on a client that stopped reading:
        // resetting the connection frees it, and the clean-up runs. A stream cut off for falling
        // behind is reset at once; a replaced one, or one the node ends as it stops, once its
        // last bytes have had `finalWriteDeadline` to go out.
        let pendingClose = NIOLockedValueBox<Scheduled<Void>?>(nil)
        let closeSoon: @Sendable () -> Void = {
            let close = connection.eventLoop.scheduleTask(in: Self.finalWriteDeadline) { Self.reset(connection) }
            pendingClose.withLockedValue { $0 = close }
        }
        let onEnd: @Sendable (PeerStream.EndReason) -> Void = { reason in
            switch reason {
            case .tooSlow: Self.reset(connection)
            case .replaced: closeSoon()
            case .closed: break
            }
        }
        let openedAtOnce = try? await coordinator.openStream(for: user, granted: rooms, resumingAfter: lastEvent, onEnd: onEnd)
        if openedAtOnce != nil { logStreamOpened() }
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                let opened = NIOLockedValueBox<PeerStream?>(openedAtOnce)
                do {
                    try await request.body.consumeWithCancellationOnInboundClose { _ in
                        try await writer.write(ByteBuffer(string: "retry: \(Self.reconnectDelay())\n"))
                        let stream = if let openedAtOnce { openedAtOnce } else { await open(onEnd: onEnd, keepingAlive: &writer) }
                        guard let stream else {
                            try await writer.write(ByteBuffer(string: "retry: \(Self.retryLaterDelay())\n\n"))
                            return
                        }
                        opened.withLockedValue { $0 = stream }
                        try await withGracefulShutdownHandler {
                            try await pump(stream, into: &writer)
                        } onGracefulShutdown: {
                            stream.end(.closed)
                            closeSoon()
                        }
                    }
                } catch {
                    // The client went away: clean up below.
                }
                if let stream = opened.withLockedValue({ $0 }) {
                    await coordinator.closeStream(stream)
                }
                try? await writer.finish(nil)
                // Finished in time: the connection may serve the client's next request.
                pendingClose.withLockedValue { $0?.cancel() }
            })
    }

    /// Opens the peer's stream (after a first try before the head failed), waiting through an
    /// outage for up to `openWait` with a comment line now and then; nil if it could not, or
    /// the node is stopping.
    private func open(
        onEnd: @escaping @Sendable (PeerStream.EndReason) -> Void, keepingAlive writer: inout any ResponseBodyWriter
    ) async -> PeerStream? {
        var commented: ContinuousClock.Instant?
        do {
            let stream = try await Outage.retrying(until: .now + Self.openWait) {
                guard !Task.isShuttingDownGracefully else { throw NodeStopping() }
                return try await coordinator.openStream(for: user, granted: rooms, resumingAfter: lastEvent, onEnd: onEnd)
            } pause: { delay in
                if commented.map({ .now - $0 >= Self.keepAliveInterval }) ?? true {
                    try await writer.write(ByteBuffer(string: ": waiting for the signaling store\n"))
                    commented = .now
                }
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: min(delay, Self.keepAliveInterval)) }
            }
            logStreamOpened()
            return stream
        } catch is RedisConnectionError {
            logger.warning("stream not opened: Redis unavailable; the client will retry", metadata: ["peer": "\(user.id)"])
        } catch is NodeStopping {
            logger.info("stream not opened: the node is stopping; the client will retry", metadata: ["peer": "\(user.id)"])
        } catch {
            // Cancelled: the client went away, or the node is stopping.
            if !(error is CancellationError || Task.isCancelled) {
                logger.error("stream not opened; the client will retry", metadata: ["peer": "\(user.id)", "error": "\(error)"])
            }
        }
        return nil
    }

    private struct NodeStopping: Error {}

    /// Closes with a reset (SO_LINGER 0) rather than a FIN: a graceful close of a connection
    /// whose client stopped reading leaves its socket in FIN-WAIT-1, still holding everything
    /// queued for it, until the kernel gives up minutes later.
    private static func reset(_ connection: any Channel) {
        guard let socket = connection as? SocketOptionProvider else { return connection.close(promise: nil) }
        socket.setSoLinger(NIOLinger(l_onoff: 1, l_linger: 0)).whenComplete { _ in connection.close(promise: nil) }
    }

    private func logStreamOpened() {
        logger.info("stream opened", metadata: ["peer": "\(user.id)", "resuming": "\(lastEvent != nil)"])
    }

    /// Writes the stream's events until it ends; a replaced stream's last one says so.
    private func pump(_ stream: PeerStream, into writer: inout any ResponseBodyWriter) async throws {
        /// Frames the events and writes them in one write (flushed). A new buffer each time,
        /// sized to the batch: one kept across writes would keep the largest batch's capacity
        /// for the stream's whole life.
        let encoder = SSEEncoder()
        func send(_ events: [StreamEvent]) async throws {
            var frame = ByteBuffer()
            // 24: the framing around each event ("id: ", "event: ", "data: ", newlines), rounded up.
            frame.reserveCapacity(events.reduce(0) { $0 + $1.data.readableBytes + $1.id.utf8.count + $1.name.utf8.count + 24 })
            for event in events { encoder.encode(event, into: &frame) }
            try await writer.write(frame)
            stream.written()
            coordinator.metrics.sentEvents(events.count)
        }
        // Whatever queued while the last write was going out leaves in one write.
        while let batch = await stream.nextBatch() { try await send(batch) }
        if stream.endReason == .replaced {
            // A newer stream of this peer took over: say so, so the client stops rather than
            // reconnects and takes it back.
            var replaced = Self.replacedEvent
            replaced.id = stream.eventID
            try await send([replaced])
        }
    }
}
