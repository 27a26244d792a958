import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTPTypes

/// Serves `POST /relay/<peer>/<event>` on the connection's event loop, in front of the stream
/// handler and Hummingbird, and passes every other request on.
///
/// Served by Hummingbird, a relay crossed between the event loop and the connection's task,
/// through its async channel, for the request and again for the answer, and ran its router and
/// middleware: over a quarter of a relay's node CPU in a profile (README, "Design"). Here the
/// request is read on the loop, and one task, kept on that loop, checks and relays it.
///
/// Requests are answered in the order they came. A relay that comes while an earlier request
/// is still being answered behind this handler goes on to Hummingbird's route (the same checks,
/// see `RelayEndpoint`); whatever comes while a relay is being answered here waits
/// until its answer is out (reads stop once something waits).
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let endpoint: RelayEndpoint
    private let answers: DirectAnswers
    private var context: ChannelHandlerContext?
    /// Runs this connection's relays on its loop (made for its first relay).
    private var executor: EventLoopExecutor?
    /// Requests passed on whose answers have not ended. A stream's never does here (it ends
    /// with its connection), so that relays behind it go on too, and close it.
    private var answersPending = 0
    /// The relay whose parts are coming in.
    private var reading: IncomingRelay?
    /// A relay is being answered: what comes in meanwhile waits in `held`.
    private var answering = false
    /// (An array: empty, it allocates nothing, and every idle stream's connection has one.)
    private var held: [Held] = []
    private var readWanted = false
    /// The client asked to close, or the node is stopping: the connection closes once the
    /// relay being answered is.
    private var closeAfterAnswer = false

    private enum Held {
        case part(HTTPRequestPart)
        case inputClosed
    }

    init(endpoint: RelayEndpoint, answers: DirectAnswers) {
        self.endpoint = endpoint
        self.answers = answers
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: Requests in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        guard !answering, held.isEmpty else { return held.append(.part(part)) }
        take(part, context: context)
    }

    private func take(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            if answersPending == 0, let route = RelayEndpoint.route(of: head) {
                reading = IncomingRelay(head: head, route: route)
                return
            }
            answersPending += 1
        case .body(var bytes) where reading != nil:
            reading?.append(&bytes, limit: endpoint.maxBodyBytes)
            return
        case .end where reading != nil:
            let relay = reading!
            reading = nil
            return answer(relay, context: context)
        case .body, .end:
            break
        }
        context.fireChannelRead(wrapInboundOut(part))
    }

    /// Reads stop only once something is held, until it is taken: a client waiting for its
    /// answer sends nothing meanwhile, and stopping reads for every relay and starting them
    /// again cost two `epoll_ctl` calls per relay. What is held is then one read's worth.
    func read(context: ChannelHandlerContext) {
        guard held.isEmpty else {
            readWanted = true
            return
        }
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        let busy = answering || reading != nil
        switch event {
        case let event as ChannelEvent where event == .inputClosed && busy:
            held.append(.inputClosed)  // after the answer: the client is gone then
        case is ChannelShouldQuiesceEvent where busy:
            closeAfterAnswer = true
        default:
            if event is ChannelShouldQuiesceEvent { closeAfterAnswer = true }
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Bytes that do not parse: behind a relay's answer, the connection closes once it is out;
    /// inside a relay's request, at once; otherwise whoever answers the connection decides.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if answering {
            closeAfterAnswer = true
            held.removeAll()
        } else if reading != nil {
            context.close(promise: nil)
        } else {
            context.fireErrorCaught(error)
        }
    }

    // MARK: Answers out

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), answersPending > 0 { answersPending -= 1 }
        context.write(data, promise: promise)
    }

    /// Checks and relays in a task on this loop, then writes the answer here.
    private func answer(_ relay: IncomingRelay, context: ChannelHandlerContext) {
        answering = true
        if DirectAnswers.asksToClose(relay.head) { closeAfterAnswer = true }
        let executor = executor ?? EventLoopExecutor(context.eventLoop)
        self.executor = executor
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let (endpoint, answers) = (endpoint, answers)
        Task(executorPreference: executor) {
            let (head, body) = await relay.answer(endpoint, answers)
            // On the loop already, as the task prefers it; hopping there is only a safeguard.
            let respond: @Sendable () -> Void = { handler.value.respond(head, body) }
            if handler.eventLoop.inEventLoop { respond() } else { handler.eventLoop.execute(respond) }
        }
    }

    private func respond(_ head: HTTPResponse, _ body: ByteBuffer) {
        guard let context, answering else { return }
        answering = false
        var head = head
        if closeAfterAnswer { head.headerFields[.connection] = "close" }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        guard !closeAfterAnswer else {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            return
        }
        guard !held.isEmpty else { return readIfWanted(context) }
        var taken = 0
        while !answering, taken < held.count {
            taken += 1
            switch held[taken - 1] {
            case .part(let part): take(part, context: context)
            case .inputClosed: context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            }
        }
        held.removeFirst(taken)
        // What was held came with reads that completed meanwhile; Hummingbird's async channel
        // hands its reads on only when one completes.
        context.fireChannelReadComplete()
        readIfWanted(context)
    }

    private func readIfWanted(_ context: ChannelHandlerContext) {
        if held.isEmpty, readWanted {
            readWanted = false
            context.read()
        }
    }
}

/// A relay's request as it comes in: its head, its route and its body, up to the limit.
private struct IncomingRelay: Sendable {
    let head: HTTPRequest
    let route: RelayEndpoint.Route
    var body: ByteBuffer?
    /// Over the limit: the rest is read and dropped, and the answer is 413.
    var tooLarge = false

    init(head: HTTPRequest, route: RelayEndpoint.Route) {
        self.head = head
        self.route = route
    }

    mutating func append(_ bytes: inout ByteBuffer, limit: Int) {
        guard !tooLarge else { return }
        if (body?.readableBytes ?? 0) + bytes.readableBytes > limit {
            tooLarge = true
            body = nil
        } else if body == nil {
            body = bytes
        } else {
            body!.writeBuffer(&bytes)
        }
    }

    /// The answer, as the API's route would give it (`OriginFilter` first, then the relay's
    /// own checks).
    func answer(_ endpoint: RelayEndpoint, _ answers: DirectAnswers) async -> (HTTPResponse, ByteBuffer) {
        guard !answers.refusesOrigin(of: head) else { return answers.refusal(APIError.originNotAllowed, for: head) }
        do {
            let answer = try await endpoint.relay(
                headers: head.headerFields, uri: route.uri ?? Self.noQuery, peerID: route.peerID, event: route.event
            ) {
                guard !tooLarge else { throw APIError.bodyTooLarge(limit: endpoint.maxBodyBytes) }
                return body ?? ByteBuffer()
            }
            return answers.json(answer.status, answer.body, for: head)
        } catch let error as HTTPError {
            return answers.refusal(error, for: head)
        } catch {
            endpoint.logger.error("relay failed", metadata: ["error": "\(error)"])
            return answers.refusal(HTTPError(.internalServerError), for: head)
        }
    }

    private static let noQuery = URI("/")
}
