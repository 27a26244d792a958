import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// The node's HTTP/1 connections: relays and `GET /connect` are served on the channel itself
/// (`RelayHandler`, `EventStreamHandler`), every other request by Hummingbird, whose handlers
/// a connection gets only once a request for them comes.
///
/// The pipeline is the one `HTTP1Channel` builds (NIO's HTTP/1 codec, then HTTP types), with
/// the relay and stream handlers after it and Hummingbird's connection handling behind them.
struct SignalingChannel: ServerChildChannel {
    struct Value: ServerChildChannelValue {
        let channel: any Channel
        /// Hummingbird's side of the connection once a request for it came; nil if none did
        /// before the connection closed.
        let hummingbird: EventLoopFuture<HummingbirdSide.AsyncChannel?>
    }

    let http1: HTTP1Channel
    let endpoint: EventStreamEndpoint
    let relays: RelayEndpoint

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // NIO starts at 2 KiB, which every connection then keeps for its reads; a request
            // head fits in 1 KiB, and a connection that reads more grows it by itself.
            try channel.syncOptions?.setOption(ChannelOptions.recvAllocator, value: Self.receiveBuffers)
            let decoder = http1.configuration.httpDecoder
            var limits = NIOHTTPDecoderLimitConfiguration()
            limits.maxHeaderFieldSize = decoder.maxHeaderFieldSize
            limits.maxHeaderListSize = decoder.maxHeaderListSize
            limits.maxHeaderFieldCount = decoder.maxHeaderFieldCount
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withPipeliningAssistance: false,  // as HTTP1Channel: requests are answered in order anyway
                withErrorHandling: false,
                withOutboundHeaderValidation: false,  // HTTP types validate
                withEncoderConfiguration: .init(),
                withDecoderLimitConfiguration: limits)
            try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            let hummingbird = HummingbirdSide(configuration: http1.configuration, logger: logger, eventLoop: channel.eventLoop)
            try channel.pipeline.syncOperations.addHandler(RelayHandler(endpoint: relays, answers: endpoint.answers))
            try channel.pipeline.syncOperations.addHandler(EventStreamHandler(endpoint: endpoint, hummingbird: hummingbird))
            return Value(channel: channel, hummingbird: hummingbird.asyncChannel)
        }
    }

    static let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536)

    /// Hummingbird serves the connection once a request for it comes. A connection that
    /// became a stream first needs no task: this one ends (and `StreamDrain` waits for the
    /// streams as the node stops).
    func handle(value: Value, logger: Logger) async {
        guard let asyncChannel = try? await value.hummingbird.get() else { return }
        await http1.handle(value: asyncChannel, logger: logger)
    }
}

/// Hummingbird's side of one connection: its handlers, added behind `EventStreamHandler` the
/// first time a request is for them, as `HTTP1Channel.setup` adds them.
final class HummingbirdSide {
    typealias AsyncChannel = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    private let configuration: HTTP1Channel.Configuration
    private let logger: Logger
    private let promise: EventLoopPromise<AsyncChannel?>
    private var resolved = false
    private(set) var isInstalled = false

    init(configuration: HTTP1Channel.Configuration, logger: Logger, eventLoop: any EventLoop) {
        self.configuration = configuration
        self.logger = logger
        promise = eventLoop.makePromise()
    }

    var asyncChannel: EventLoopFuture<AsyncChannel?> { promise.futureResult }

    /// Adds the handlers at the end of the pipeline, once.
    func install(behind context: ChannelHandlerContext) throws {
        guard !isInstalled else { return }
        isInstalled = true
        let pipeline = context.pipeline.syncOperations
        try pipeline.addHandlers(configuration.additionalChannelHandlers())
        // The node sets no idle timeout: behind this handler, Hummingbird's state handler sees
        // none of a stream's writes, and would close a live stream on a connection it served.
        precondition(configuration.idleTimeout == nil, "an idle timeout would cut streams off")
        try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: configuration.idleTimeout.map { .init($0) }, logger: logger))
        let channel = try AsyncChannel(wrappingChannelSynchronously: context.channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        resolve(channel)
    }

    /// The connection closed, or turned into a stream (and closes when it ends), without a
    /// request for Hummingbird.
    func notNeeded() { resolve(nil) }

    private func resolve(_ channel: AsyncChannel?) {
        guard !resolved else { return }
        resolved = true
        promise.succeed(channel)
    }
}
