import Coordinator
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// Serves `GET /connect` straight on the connection, in front of Hummingbird, and passes every
/// other request on to it.
///
/// An idle stream costs the node its channel, this handler and its `PeerStream`: events are
/// pushed to the socket as they come (`PeerStream.whenReady`), and no task waits on them.
/// Served by a route, a stream would also keep Hummingbird's connection task and its async
/// channel, and that task keeps the frames of the deepest call it ever made (router,
/// middleware, opening the stream): 44 KiB an idle stream (README, "Memory per stream").
///
/// Hummingbird's own handlers are added behind this one when the connection's first request
/// for them comes (`SignalingChannel`): a connection that only streams never has them. One that
/// has them can still turn into a stream; Hummingbird then waits, idle, until it closes.
///
/// Everything here runs on the channel's event loop; the tasks that admit and open a stream
/// come back to it for every write.
final class EventStreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let endpoint: EventStreamEndpoint
    /// Adds Hummingbird's handlers behind this one (the first time a request is for them).
    private let hummingbird: HummingbirdSide
    private var context: ChannelHandlerContext?
    private var phase = Phase.idle
    /// From the head of a `GET /connect` to its end: its parts are not Hummingbird's.
    private var inStreamRequest = false
    /// Requests passed on to Hummingbird whose answers have not ended yet.
    private var answersPending = 0
    /// A `GET /connect` that came while Hummingbird was still answering an earlier request.
    private var waitingStream: HTTPRequest?
    /// Where a stream's bytes are written, once its head is out: below NIO's HTTP encoder (see
    /// `answer`).
    private var streamOut: ChannelHandlerContext?
    /// Resets a connection whose last bytes are taking too long (`finalWriteDeadline`).
    private var pendingReset: Scheduled<Void>?
    /// The node is stopping: a stream's connection closes once its answer has ended.
    private var stopping = false
    /// A request came behind a stream's and was dropped, or the client asked to close: a
    /// refusal closes the connection rather than leave that request unanswered.
    private var closeAfterRefusal = false

    private enum Phase {
        /// No stream: requests go to Hummingbird.
        case idle
        /// Admitting the request and opening its stream (in a task).
        case opening(Task<Void, Never>?)
        /// Pushing the stream's events to the socket, one write at a time.
        case streaming(PeerStream)
        /// The stream ended, or the connection did: nothing more is served on it (a stream's
        /// connection closes once its answer has ended).
        case ending
    }

    init(endpoint: EventStreamEndpoint, hummingbird: HummingbirdSide) {
        self.endpoint = endpoint
        self.hummingbird = hummingbird
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        streamOut = nil
        hummingbird.notNeeded()
    }

    // MARK: Requests in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .head(let request) = part, case .idle = phase, waitingStream == nil, EventStreamEndpoint.serves(request) {
            inStreamRequest = true
            closeAfterRefusal = DirectAnswers.asksToClose(request)
            if answersPending > 0 { waitingStream = request } else { begin(request) }
            return
        }
        if inStreamRequest {
            if case .end = part { inStreamRequest = false }
            return
        }
        // A client sends nothing after a stream's request; whatever it does send is dropped.
        // A request once the stream has begun closes the connection: NIO's decoder queues each
        // request's method for an answer that will never come, so the queue would only grow.
        guard case .idle = phase, waitingStream == nil else {
            guard case .head = part else { return }
            switch phase {
            case .streaming, .ending: context.close(promise: nil)
            case .opening where streamOut != nil: context.close(promise: nil)  // its head is out
            case .idle, .opening: closeAfterRefusal = true
            }
            return
        }
        if case .head = part {
            do { try hummingbird.install(behind: context) } catch { return context.close(promise: nil) }
            answersPending += 1
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
        guard case .end = unwrapOutboundIn(data) else { return }
        answersPending -= 1
        if answersPending == 0, let request = waitingStream {
            waitingStream = nil
            begin(request)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pendingReset?.cancel()
        switch phase {
        case .opening(let task):
            task?.cancel()
            phase = .ending
        case .streaming(let stream):
            phase = .ending
            let coordinator = endpoint.coordinator
            Task { await coordinator.closeStream(stream) }
        case .idle, .ending:
            break
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let event as ChannelEvent where event == .inputClosed && (isStreaming || !hummingbird.isInstalled):
            // The client shut its side: it is gone. (Hummingbird, once installed, closes an idle
            // connection itself; before that nothing else would.)
            context.close(promise: nil)
        case is ChannelShouldQuiesceEvent:
            stopping = true
            switch phase {
            case .idle where hummingbird.isInstalled: context.fireUserInboundEventTriggered(event)
            case .idle: context.close(promise: nil)
            case .opening(let task): task?.cancel()  // the stream ends with `retry:`
            case .streaming(let stream):
                stream.end(.closed)
                resetSoon()
            case .ending: resetSoon()
            }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// A request that does not parse. Hummingbird answers it once it serves the connection;
    /// before that, or around a stream, the connection closes (a 400 first, if nothing else is
    /// being answered on it).
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard isStreaming || !hummingbird.isInstalled else { return context.fireErrorCaught(error) }
        if case .idle = phase, !isStreaming {
            let head = HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"])
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            phase = .ending
            return
        }
        context.close(promise: nil)
    }

    private var isStreaming: Bool {
        if case .idle = phase { return inStreamRequest || waitingStream != nil }
        return true
    }

    // MARK: A stream's life

    /// Admits and opens the stream in a task, which comes back to the event loop to write.
    private func begin(_ request: HTTPRequest) {
        guard let context else { return }
        let endpoint = endpoint
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let onLoop: @Sendable (@escaping @Sendable (EventStreamHandler) -> Void) -> Void = { body in
            handler.eventLoop.execute { body(handler.value) }
        }
        let channel = context.channel
        // A stream cut off for falling behind is reset at once: a write may be stuck on it. Any
        // other is reset only if its last bytes do not go out in time (a write stuck behind a
        // client that stopped reading would never tell the handler that its stream ended).
        let onEnd: @Sendable (PeerStream.EndReason) -> Void = { reason in
            switch reason {
            case .tooSlow: Self.reset(channel)
            case .replaced, .closed: onLoop { $0.streamEnded() }
            }
        }
        phase = .opening(nil)
        let task = Task {
            let admission: EventStreamEndpoint.Admission
            switch await endpoint.admit(request) {
            case .failure(let error): return onLoop { $0.refuse(request, error) }
            case .success(let admitted): admission = admitted
            }
            if let stream = await endpoint.openAtOnce(admission, onEnd: onEnd) {
                return onLoop { $0.answer(request, then: stream) }
            }
            onLoop { $0.answer(request, then: nil) }
            let stream = await endpoint.open(admission, onEnd: onEnd, keepAlive: { onLoop { $0.keepAlive() } })
            onLoop { $0.opened(stream) }
        }
        if case .opening = phase { phase = .opening(task) }
    }

    /// A request the endpoint refused: its error, and the connection serves the next request.
    private func refuse(_ request: HTTPRequest, _ error: HTTPError) {
        guard case .opening = phase, let context else { return }
        let closing = stopping || closeAfterRefusal
        var (head, body) = endpoint.answers.refusal(error, for: request)
        if closing { head.headerFields[.connection] = "close" }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        endAnswer(closing: closing)
    }

    /// The stream's head and its reconnect delay; then its events, if it is open already.
    ///
    /// The stream is written below NIO's HTTP encoder, as bytes: its body ends when the
    /// connection does (its head says `Connection: close`), so it needs no chunked framing, and
    /// each batch goes to the socket as one buffer without passing through two encoders. They
    /// cost a fifth of a ping round to thousands of streams.
    private func answer(_ request: HTTPRequest, then stream: PeerStream?) {
        guard case .opening = phase, let context else {
            if let stream { closeSession(stream) }
            return
        }
        guard let below = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self) else {
            if let stream { closeSession(stream) }
            return context.close(promise: nil)
        }
        streamOut = below
        _ = context.channel.setOption(ChannelOptions.socketOption(.so_sndbuf), value: EventStreamEndpoint.sendBufferBytes)
        below.write(NIOAny(endpoint.streamHeadBytes(for: request)), promise: nil)
        // The connection closes when the stream ends: Hummingbird will not be needed on it.
        hummingbird.notNeeded()
        write("retry: \(EventStreamEndpoint.reconnectDelay())\n")
        if let stream { opened(stream) }
    }

    private func keepAlive() {
        guard case .opening = phase else { return }
        write(": waiting for the signaling store\n")
    }

    /// The wait for the stream is over: stream its events, or tell the client when to retry.
    private func opened(_ stream: PeerStream?) {
        guard case .opening = phase else {
            if let stream { closeSession(stream) }
            return
        }
        guard let stream else {
            write("retry: \(EventStreamEndpoint.retryLaterDelay())\n\n")
            return endAnswer(closing: true)
        }
        phase = .streaming(stream)
        if stopping {
            stream.end(.closed)
            resetSoon()
        }
        readNext(from: stream)
    }

    private func readNext(from stream: PeerStream) {
        guard let context else { return }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        stream.whenReady { batch in
            handler.eventLoop.execute { handler.value.deliver(batch, from: stream) }
        }
    }

    /// Writes a batch (whatever queued while the last write was going out leaves in one
    /// write), and asks for the next once it is out.
    private func deliver(_ batch: [StreamEvent]?, from stream: PeerStream) {
        guard case .streaming(let current) = phase, current === stream, let streamOut else { return }
        guard let batch else { return end(stream) }
        streamOut.writeAndFlush(NIOAny(Self.frame(batch))).assumeIsolated().whenSuccess {
            stream.written()
            self.endpoint.coordinator.metrics.sentEvents(batch.count)
            self.readNext(from: stream)
        }
    }

    /// The stream ended (replaced, too slow, or ended by the node): a replaced stream's last
    /// event says so, so that the client stops rather than reconnects and takes it back. The
    /// answer ends once its session is closed.
    private func end(_ stream: PeerStream) {
        phase = .ending
        if stream.endReason == .replaced, let streamOut {
            var replaced = EventStreamEndpoint.replacedEvent
            replaced.id = stream.eventID
            streamOut.writeAndFlush(NIOAny(Self.frame([replaced])), promise: nil)
        }
        closeSession(stream) { $0.endAnswer(closing: true) }
    }

    private func closeSession(_ stream: PeerStream, then: (@Sendable (EventStreamHandler) -> Void)? = nil) {
        let coordinator = endpoint.coordinator
        let handler = context.map { NIOLoopBound(self, eventLoop: $0.eventLoop) }
        Task {
            await coordinator.closeStream(stream)
            if let then, let handler { handler.eventLoop.execute { then(handler.value) } }
        }
    }

    /// Ends the answer. A refusal's connection then serves the client's next request, unless
    /// the node is stopping; a stream's closes once its last bytes are out (its head said
    /// `Connection: close`), so that a client learns that its stream ended when its
    /// connection does.
    private func endAnswer(closing: Bool) {
        guard let context, context.channel.isActive else { return }
        phase = closing ? .ending : .idle
        if closing { resetSoon() }
        // A stream's body ends with the connection; a refusal's with its `.end`.
        let ended = streamOut.map { $0.writeAndFlush(NIOAny(ByteBuffer())) } ?? context.writeAndFlush(wrapOutboundOut(.end(nil)))
        ended.assumeIsolated().whenComplete { _ in
            guard closing else {
                self.pendingReset?.cancel()
                self.pendingReset = nil
                return
            }
            // A reset still pending goes when the connection has closed.
            self.context?.close(promise: nil)
        }
    }

    /// Writes a line of the stream's own (`retry:`, a comment).
    private func write(_ text: String) {
        streamOut?.writeAndFlush(NIOAny(ByteBuffer(string: text)), promise: nil)
    }

    /// A stream ended, not for falling behind. Only the one being served counts: opening
    /// through an outage may end attempts before it.
    private func streamEnded() {
        guard case .streaming(let stream) = phase, stream.endReason != nil else { return }
        resetSoon()
    }

    /// Gives the stream's last bytes `finalWriteDeadline` to go out, then resets the connection.
    private func resetSoon() {
        guard let context, context.channel.isActive, pendingReset == nil else { return }
        let channel = context.channel
        pendingReset = context.eventLoop.assumeIsolated().scheduleTask(in: EventStreamEndpoint.finalWriteDeadline) {
            Self.reset(channel)
        }
    }

    /// Closes with a reset (SO_LINGER 0) rather than a FIN: a graceful close of a connection
    /// whose client stopped reading leaves its socket in FIN-WAIT-1, still holding everything
    /// queued for it, until the kernel gives up minutes later.
    private static func reset(_ channel: any Channel) {
        guard let socket = channel as? SocketOptionProvider else { return channel.close(promise: nil) }
        socket.setSoLinger(NIOLinger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
    }

    /// The events framed for the socket, in a buffer sized to them: one kept across writes would
    /// keep the largest batch's capacity for the stream's whole life.
    private static func frame(_ events: [StreamEvent]) -> ByteBuffer {
        let encoder = SSEEncoder()
        var frame = ByteBuffer()
        // 24: the framing around each event ("id: ", "event: ", "data: ", newlines), rounded up.
        frame.reserveCapacity(events.reduce(0) { $0 + $1.data.readableBytes + $1.id.utf8.count + $1.name.utf8.count + 24 })
        for event in events { encoder.encode(event, into: &frame) }
        return frame
    }
}
