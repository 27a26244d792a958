import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SignalingClient

// The relay mode's senders and receivers as channel handlers on the event loop. The tool shares
// the machine with what it measures, and in a closed loop its CPU per relay is the nodes'
// ceiling as much as their own: through `PersistentConnection`, an `AsyncStream` of response
// parts and `SSEParser`'s strings it spent about 60 µs of CPU per relay (README, "The load
// tool"), half of what both nodes and Redis did.
// Here a request is one buffer written straight to the socket, and an event is read in place.

/// A connection for one sender: once told to `Start`, posts `load` relays to its receiver, back
/// to back or paced, until `stop`, then one `load-end` with the count; `done` succeeds once that
/// is answered. (Every sender connects first and all start together: paced, a late one would
/// begin with a burst of requests already due.)
final class RelaySender: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    /// The request heads up to their `Content-Length` value, for `load` and for `load-end`.
    private let loadHead: String, endHead: String
    private let padding: String
    private var pacer = Pacer(start: 0, rate: 0, senders: 1)
    private var stop: UInt64 = 0
    private let counters: Counters
    private let done: EventLoopPromise<Void>
    private var sequence = 0
    private var status = 0
    private var ending = false
    /// When the request now in flight went out; a server that sits on one for 30 s ends the run.
    private var sentAt: UInt64 = 0
    private var watchdog: Scheduled<Void>?

    /// The event that starts the sender: its pace, and when to stop.
    struct Start: Sendable {
        let pacer: Pacer
        let stop: UInt64
    }

    init(receiver: String, token: String, node: NodeAddress, padding: String, counters: Counters, done: EventLoopPromise<Void>) {
        let headers = " HTTP/1.1\r\nHost: \(node.host):\(node.port)\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\nContent-Length: "
        loadHead = "POST /relay/\(receiver)/load" + headers
        endHead = "POST /relay/\(receiver)/load-end" + headers
        self.padding = padding
        self.counters = counters
        self.done = done
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let start = event as? Start else { return context.fireUserInboundEventTriggered(event) }
        (pacer, stop) = (start.pacer, start.stop)
        watch(context: context)
        sendNext(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body: break
        case .end:
            sentAt = 0
            if ending {
                done.succeed()
                context.close(promise: nil)
                return
            }
            counters.sent(ok: status == 200)
            sequence += 1
            sendNext(context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        watchdog?.cancel()
        done.fail(SignalingClientError.connectionClosed)  // ignored once the run has succeeded
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// The next relay when it is due (now, in a closed loop), or the `load-end` after the last.
    private func sendNext(context: ChannelHandlerContext) {
        let due = pacer.dueTime(sequence)
        guard due < stop else {
            ending = true
            return send(head: endHead, body: #"{"s":\#(sequence)}"#, context: context)
        }
        let now = monotonicNanoseconds()
        let body = #"{"s":\#(sequence),"t":\#(due),"p":"\#(padding)"}"#
        guard due > now else { return send(head: loadHead, body: body, context: context) }
        context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(due - now))) {
            self.send(head: self.loadHead, body: body, context: context)
        }
    }

    private func send(head: String, body: String, context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: head.utf8.count + body.utf8.count + 8)
        buffer.writeString(head)
        buffer.writeString(String(body.utf8.count))
        buffer.writeStaticString("\r\n\r\n")
        buffer.writeString(body)
        sentAt = monotonicNanoseconds()
        context.write(wrapOutboundOut(.head(EncodedRequests.post)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    /// One timer for the connection's life rather than one per request.
    private func watch(context: ChannelHandlerContext) {
        watchdog = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) {
            if self.sentAt != 0, monotonicNanoseconds() - self.sentAt > 30_000_000_000 { return context.close(promise: nil) }
            self.watch(context: context)
        }
    }
}

/// A receiver's event stream: learns its peer id from `connected`, then counts `load` events
/// (latency from the time each was due, duplicates, reordering) until `load-end`.
final class RelayReceiver: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let opened: EventLoopPromise<String>
    private let finished: EventLoopPromise<Latencies>
    private let counters: Counters
    private let request: String
    private var scanner = EventScanner()
    private var latencies = Latencies()
    private var expected = 0
    private var seen = Set<Int>()
    private var lastHeard: UInt64 = 0

    init(request: String, opened: EventLoopPromise<String>, finished: EventLoopPromise<Latencies>, counters: Counters) {
        self.request = request
        self.opened = opened
        self.finished = finished
        self.counters = counters
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(NIOAny(HTTPClientRequestPart.head(EncodedRequests.get)), promise: nil)
        context.writeAndFlush(NIOAny(HTTPClientRequestPart.body(.byteBuffer(context.channel.allocator.buffer(string: request)))), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            if head.status != .ok {
                opened.fail(SignalingClientError.unexpectedStatus(Int(head.status.code), "GET /connect"))
                context.close(promise: nil)
            }
        case .body(let buffer):
            scanner.feed(buffer) { event, data in self.heard(event: event, data: data, context: context) }
        case .end:
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        opened.fail(SignalingClientError.connectionClosed)  // ignored once it has succeeded
        finished.succeed(latencies)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// The event after which ten seconds without an event end the stream (its `load-end` was
    /// lost): the relays are about to begin.
    struct Listen: Sendable {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is Listen else { return context.fireUserInboundEventTriggered(event) }
        lastHeard = monotonicNanoseconds()
        watch(context: context)
    }

    private func watch(context: ChannelHandlerContext) {
        context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(250)) {
            guard context.channel.isActive else { return }
            if monotonicNanoseconds() - self.lastHeard > 10_000_000_000 { return context.close(promise: nil) }
            self.watch(context: context)
        }
    }

    private static let sequenceKey = Array(#""s":"#.utf8), dueKey = Array(#""t":"#.utf8)

    private func heard(event: EventScanner.Name, data: [UInt8], context: ChannelHandlerContext) {
        let now = monotonicNanoseconds()
        switch event {
        case .ping: return
        case .load:
            lastHeard = now
            guard let sequence = integer(after: Self.sequenceKey, in: data), let due = integer(after: Self.dueKey, in: data)
            else { return }
            latencies.record(nanoseconds: now > UInt64(due) ? now - UInt64(due) : 0)
            if !seen.insert(sequence).inserted {
                counters.duplicate()
            } else if sequence != expected {
                counters.reordered()
            }
            expected = sequence + 1
            counters.delivered()
        case .loadEnd:
            finished.succeed(latencies)
            context.close(promise: nil)
        case .other(let name):
            lastHeard = now
            guard name == "connected", let id = Peer.peerID(connected: Data(data)) else { return }
            opened.succeed(id)
        }
    }
}

/// A receiver's stream, opened with `GET /connect` and held until its `load-end`.
struct ReceiverStream: Sendable {
    let id: String
    let token: String
    let node: NodeAddress
    let channel: Channel
    let finished: EventLoopFuture<Latencies>

    static func open(name: String, node: NodeAddress, counters: Counters) async throws -> ReceiverStream {
        let token = try await SignalingClient(host: node.host, port: node.port).access(username: name)
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let opened = eventLoop.makePromise(of: String.self)
        let finished = eventLoop.makePromise(of: Latencies.self)
        let request = "GET /connect?token=\(token) HTTP/1.1\r\nHost: \(node.host):\(node.port)\r\nAccept: text/event-stream\r\n\r\n"
        let channel = try await connectHTTP(host: node.host, port: node.port, group: eventLoop, requests: .encoded) {
            RelayReceiver(request: request, opened: opened, finished: finished, counters: counters)
        }
        let deadline = eventLoop.scheduleTask(in: .seconds(30)) { channel.close(promise: nil) }
        defer { deadline.cancel() }
        return ReceiverStream(id: try await opened.futureResult.get(), token: token, node: node, channel: channel, finished: finished.futureResult)
    }

    /// Starts the silence timer: the relays are about to begin.
    func listen() { channel.pipeline.fireUserInboundEventTriggered(RelayReceiver.Listen()) }

    func close() { channel.close(promise: nil) }
}

/// Splits an event stream into events, keeping only what the relay mode reads: the event's
/// name and its data's bytes. Lines end with LF or CRLF, as both servers the tool drives
/// write them (the EventSource rules also allow a lone CR; `SSEParser` follows those).
struct EventScanner {
    enum Name: Equatable { case ping, load, loadEnd, other(String) }

    private var line: [UInt8] = []
    private var name: [UInt8] = []
    private var data: [UInt8] = []
    private var hasData = false

    init() {
        line.reserveCapacity(512)
        data.reserveCapacity(512)
    }

    mutating func feed(_ buffer: ByteBuffer, event: (Name, [UInt8]) -> Void) {
        buffer.withUnsafeReadableBytes { bytes in
            var start = bytes.startIndex
            while let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) {
                line.append(contentsOf: bytes[start..<end])
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                endLine(event: event)
                line.removeAll(keepingCapacity: true)
                start = end + 1
            }
            line.append(contentsOf: bytes[start...])
        }
    }

    private static let dataField = Array("data:".utf8), eventField = Array("event:".utf8)

    private mutating func endLine(event: (Name, [UInt8]) -> Void) {
        if line.isEmpty {
            if hasData { event(Self.name(name), data) }
            name.removeAll(keepingCapacity: true)
            data.removeAll(keepingCapacity: true)
            hasData = false
        } else if line.starts(with: Self.dataField) {
            if hasData { data.append(UInt8(ascii: "\n")) }
            data.append(contentsOf: Self.value(of: line, after: Self.dataField.count))
            hasData = true
        } else if line.starts(with: Self.eventField) {
            name.removeAll(keepingCapacity: true)
            name.append(contentsOf: Self.value(of: line, after: Self.eventField.count))
        }
    }

    private static func value(of line: [UInt8], after prefix: Int) -> ArraySlice<UInt8> {
        let value = line[prefix...]
        return value.first == UInt8(ascii: " ") ? value.dropFirst() : value
    }

    private static let ping = Array("ping".utf8), load = Array("load".utf8), loadEnd = Array("load-end".utf8)

    private static func name(_ bytes: [UInt8]) -> Name {
        if bytes == load { return .load }
        if bytes == ping { return .ping }
        if bytes == loadEnd { return .loadEnd }
        return .other(bytes.isEmpty ? "message" : String(decoding: bytes, as: UTF8.self))
    }
}
