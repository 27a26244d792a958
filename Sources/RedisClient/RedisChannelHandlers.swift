import NIOCore

/// Bytes in, replies out: feeds hiredis's reader and passes each complete reply on.
final class RESPDecoder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = RESPValue

    private let reader = HiredisReader()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try reader.feed(unwrapInboundIn(data))
            while let reply = try reader.next() {
                context.fireChannelRead(wrapInboundOut(reply))
            }
        } catch {
            // A reader that saw bad bytes is unusable for good: drop the connection.
            context.fireErrorCaught(error)
            context.close(promise: nil)
        }
    }
}

/// Encoded commands and the promises waiting for their replies, in the order they were written.
struct RedisRequest {
    var bytes: ByteBuffer
    var promises: [EventLoopPromise<RESPValue>]
}

/// Matches replies to commands in order (so any number may be in flight), and hands replies
/// nobody waits for — pub/sub pushes — to `onPush`. Fails every waiting command when the
/// connection closes, and closes a connection whose oldest command got no reply in time.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private var waiting = CircularBuffer<EventLoopPromise<RESPValue>>(initialCapacity: 64)
    private let onPush: ((RESPValue) -> Void)?
    private let commandTimeout: TimeAmount
    private var lastProgress = NIODeadline.now()
    private var timeoutCheck: RepeatedTask?
    private var failure: RedisConnectionError = .connectionClosed
    private var flushPending = false

    init(commandTimeout: TimeAmount, onPush: ((RESPValue) -> Void)? = nil) {
        self.commandTimeout = commandTimeout
        self.onPush = onPush
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let interval = TimeAmount.nanoseconds(max(commandTimeout.nanoseconds / 4, 50_000_000))
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timeoutCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = loopBound.value
            handler.checkTimeout(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timeoutCheck?.cancel()
        failAll(failure)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard context.channel.isActive else {
            request.promises.forEach { $0.fail(failure) }
            promise?.fail(failure)
            return
        }
        if waiting.isEmpty { lastProgress = .now() }
        waiting.append(contentsOf: request.promises)
        context.write(wrapOutboundOut(request.bytes), promise: promise)
    }

    /// Flushes once the event loop has run what it has queued: the commands of every request
    /// read in one turn of the loop then go out in one system call, where a flush each was a
    /// `write` each (in a closed-loop relay run, the nodes' costliest call).
    func flush(context: ChannelHandlerContext) {
        guard !flushPending else { return }
        flushPending = true
        context.eventLoop.assumeIsolated().execute {
            self.flushPending = false
            context.flush()
        }
    }

    /// Asks the handler to close its connection once no command waits for a reply (now, if
    /// none does): a retired connection whose commands keep their replies.
    struct CloseWhenIdle: Sendable {}
    private var closeWhenIdle = false

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is CloseWhenIdle else { return context.triggerUserOutboundEvent(event, promise: promise) }
        closeWhenIdle = true
        promise?.succeed()
        if waiting.isEmpty { context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let reply = unwrapInboundIn(data)
        if let promise = waiting.popFirst() {
            lastProgress = .now()
            promise.succeed(reply)
            if closeWhenIdle, waiting.isEmpty { context.close(promise: nil) }
        } else if let onPush {
            onPush(reply)
        } else {
            context.fireErrorCaught(RedisConnectionError.protocolError("reply without a command"))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeoutCheck?.cancel()
        failAll(failure)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let error = error as? RedisConnectionError { failure = error }
        context.close(promise: nil)
    }

    private func checkTimeout(context: ChannelHandlerContext) {
        guard !waiting.isEmpty, NIODeadline.now() - lastProgress > commandTimeout else { return }
        failure = .timeout
        failAll(.timeout)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisConnectionError) {
        while let promise = waiting.popFirst() { promise.fail(error) }
    }
}
