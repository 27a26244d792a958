import Coordinator
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore

/// `POST /relay/:peerId/:event` with a JSON body: delivers `{"peer": sender, "data": body}`.
///
/// Everything a relay checks and answers, wherever it is served: on the connection's event
/// loop by `RelayHandler` (the hot path), or by Hummingbird's route when its path needs decoding
/// or an earlier request on the connection is still being answered. Both answer the same.
struct RelayEndpoint: Sendable {
    let coordinator: Coordinator
    let tokens: TokenAuthority
    let limiter: RateLimiter
    let maxBodyBytes: Int
    let logger: Logger

    init(coordinator: Coordinator, tokens: TokenAuthority, configuration: NodeConfiguration, logger: Logger) {
        self.coordinator = coordinator
        self.tokens = tokens
        limiter = RateLimiter(rate: configuration.relayRate, burst: configuration.relayBurst)
        maxBodyBytes = configuration.maxBodyBytes
        self.logger = logger
    }

    /// A relay's answer when it is not an error: its status and JSON body.
    struct Answer: Sendable {
        let status: HTTPResponse.Status
        let body: ByteBuffer
    }

    /// Checks the relay (token, ids, rate, then the body, which `body` reads or refuses with
    /// 413) and relays it; errors are `HTTPError`s to answer with.
    func relay(
        headers: HTTPFields, uri: URI, peerID: String?, event: String?, body: () async throws -> ByteBuffer
    ) async throws -> Answer {
        let user = try await tokens.authenticate(headers, uri).user
        guard let target = peerID.flatMap(PeerID.init) else { throw APIError.invalidID("peer id") }
        guard let event = event.flatMap(EventName.init) else { throw APIError.invalidID("event name") }
        if let wait = limiter.take(for: user.id) {
            coordinator.metrics.refused("relay_rate")
            throw APIError.tooManyRequests(retryAfter: wait)
        }
        guard let data = RelayBody.compactJSON(try await body()) else { throw APIError.badRequest("body must be JSON") }
        let outcome = try await withRedis {
            try await coordinator.relay(from: user, to: target, event: event, body: data)
        }
        logger.debug("relay", metadata: ["peer": "\(user.id)", "to": "\(target)", "event": "\(event)", "outcome": "\(outcome.rawValue)"])
        switch outcome {
        case .delivered: return Answer(status: .ok, body: Self.deliveredBody)
        case .held: return Answer(status: .accepted, body: Self.heldBody)
        case .noSuchPeer: throw HTTPError(.notFound, message: "peer '\(target)' has no open stream")
        case .notInSharedRoom: throw HTTPError(.forbidden, message: "peer '\(target)' shares no room with you")
        }
    }

    /// The answers, made once: they never change, and relays are the hot path.
    private static let deliveredBody = ByteBuffer(string: #"{"delivered":true}"#)
    private static let heldBody = ByteBuffer(string: #"{"delivered":false,"held":true}"#)

    /// A relay's path as the connection can serve it without Hummingbird's router:
    /// `/relay/<peer>/<event>`, with or without a query.
    struct Route: Sendable {
        let peerID: String
        let event: String
        /// The query, if any (it may carry `?token=`).
        let uri: URI?
    }

    /// The route of a `POST /relay/<peer>/<event>`; nil for any other request, and for a path
    /// with percent escapes or empty segments, which Hummingbird's router decodes and matches.
    static func route(of request: HTTPRequest) -> Route? {
        guard request.method == .post, let path = request.path else { return nil }
        let bytes = path.utf8
        let prefix = "/relay/".utf8
        guard bytes.starts(with: prefix), !bytes.contains(UInt8(ascii: "%")) else { return nil }
        // Two non-empty segments, found by index: splitting into an array showed in a profile.
        let slashOrQuery = { (byte: UInt8) in byte == UInt8(ascii: "/") || byte == UInt8(ascii: "?") }
        let peerStart = bytes.index(bytes.startIndex, offsetBy: prefix.count)
        guard let peerEnd = bytes[peerStart...].firstIndex(where: slashOrQuery), peerEnd > peerStart,
            bytes[peerEnd] == UInt8(ascii: "/")
        else { return nil }
        let eventStart = bytes.index(after: peerEnd)
        let eventEnd = bytes[eventStart...].firstIndex(where: slashOrQuery) ?? bytes.endIndex
        guard eventEnd > eventStart, eventEnd == bytes.endIndex || bytes[eventEnd] == UInt8(ascii: "?") else { return nil }
        return Route(
            peerID: String(path[peerStart..<peerEnd]), event: String(path[eventStart..<eventEnd]),
            uri: eventEnd == bytes.endIndex ? nil : URI(path))
    }
}
