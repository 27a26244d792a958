import Coordinator
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Prometheus
import ServiceLifecycle
import WebAssets

/// The HTTP API of DESIGN.md on top of a `Coordinator`.
struct SignalingAPI: Sendable {
    let coordinator: Coordinator
    let tokens: TokenAuthority
    let configuration: NodeConfiguration
    let metricsRegistry: PrometheusCollectorRegistry?
    let relays: RelayEndpoint
    let joinLimiter: RateLimiter

    init(
        coordinator: Coordinator, tokens: TokenAuthority, configuration: NodeConfiguration, metricsRegistry: PrometheusCollectorRegistry?,
        relays: RelayEndpoint
    ) {
        self.coordinator = coordinator
        self.tokens = tokens
        self.configuration = configuration
        self.metricsRegistry = metricsRegistry
        self.relays = relays
        joinLimiter = RateLimiter(rate: configuration.joinRate, burst: configuration.joinBurst)
    }

    func addRoutes(to router: Router<BasicRequestContext>) {
        router.post("access", use: access)
        // `GET /connect` never reaches the router: see `EventStreamHandler`.
        router.post(":roomId/join", use: join)
        router.post(":roomId/leave", use: leave)
        router.post("relay/:peerId/:event", use: relay)
        router.get("healthz", use: health)
        router.get("readyz", use: ready)
        router.get("status", use: status)
        router.get("metrics", use: metrics)
        // The demo web client: `/` picks a new room, `/<room>` is the room's page.
        router.get("/", use: newRoom)
        router.get("static/:file", use: asset)
        router.get(":roomId", use: roomPage)
    }

    // MARK: Routes

    /// `POST /access {"username": "ann"}` → `{"token": JWT}`. Sent with a current token
    /// (`Authorization: Bearer …`) instead, it renews that token: a fresh one for the same peer,
    /// with the same room grants and lifetime, signed with the current secret (a token signed
    /// with the previous one renews too, so that a rotation logs nobody out). 404 with
    /// `--access off`: tokens come from the application.
    @Sendable func access(request: Request, context: BasicRequestContext) async throws -> Response {
        guard configuration.access == .open else { throw APIError.accessOff }
        if let current = TokenAuthority.bearerToken(request.headers) {
            guard let identity = await tokens.verify(current) else { throw APIError.invalidToken }
            return try json(TokenAnswer(token: try await tokens.issue(for: identity.user, rooms: identity.rooms, lifetime: identity.lifetime)))
        }
        struct AccessRequest: Decodable { let username: String }
        let body = try await readBody(request)
        guard let parsed = try? JSONDecoder().decode(AccessRequest.self, from: body) else {
            throw APIError.badRequest("expected a JSON body {\"username\": \"...\"}")
        }
        guard PeerUser.isValidUsername(parsed.username) else {
            throw APIError.badRequest("username must be 1 to 64 characters without control characters")
        }
        let (token, _) = try await tokens.issue(username: parsed.username)
        return try json(TokenAnswer(token: token))
    }

    /// `POST /:roomId/join`.
    @Sendable func join(request: Request, context: BasicRequestContext) async throws -> Response {
        let identity = try await authenticate(request)
        let user = identity.user
        let room = try roomID(context)
        guard identity.rooms.allows(room) else { throw APIError.roomNotGranted(room) }
        context.logger.info("join", metadata: ["peer": "\(user.id)", "room": "\(room)"])
        if let wait = joinLimiter.take(for: user.id) {
            coordinator.metrics.refused("join_rate")
            throw APIError.tooManyRequests(retryAfter: wait)
        }
        let outcome: Coordinator.JoinOutcome
        do {
            outcome = try await withRedis { try await coordinator.join(user, room: room) }
        } catch is Coordinator.NoOpenStream {
            throw APIError.noOpenStream
        } catch is Coordinator.RoomFull {
            throw APIError.roomFull
        } catch is Coordinator.TooManyRooms {
            throw APIError.tooManyRooms
        }
        switch outcome {
        case .joined(let members): return try json(JoinAnswer(roomId: room.rawValue, joined: true, peers: members))
        case .alreadyMember: return try json(JoinAnswer(roomId: room.rawValue, joined: false, alreadyMember: true))
        }
    }

    /// `POST /:roomId/leave`.
    @Sendable func leave(request: Request, context: BasicRequestContext) async throws -> Response {
        let user = try await authenticate(request).user
        let room = try roomID(context)
        context.logger.info("leave", metadata: ["peer": "\(user.id)", "room": "\(room)"])
        guard try await withRedis({ try await coordinator.leave(user, room: room) }) else {
            throw HTTPError(.notFound, message: "not a member of room '\(room)'")
        }
        return try json(LeaveAnswer(roomId: room.rawValue))
    }

    /// `POST /relay/:peerId/:event`, when the connection did not serve it itself (see
    /// `RelayEndpoint`).
    @Sendable func relay(request: Request, context: BasicRequestContext) async throws -> Response {
        let answer = try await relays.relay(
            headers: request.headers, uri: request.uri, peerID: context.parameters.get("peerId"), event: context.parameters.get("event"),
            body: { try await readBody(request) })
        return Response(status: answer.status, headers: [.contentType: "application/json"], body: .init(byteBuffer: answer.body))
    }

    /// `GET /healthz`: the process is up.
    @Sendable func health(request: Request, context: BasicRequestContext) async throws -> Response {
        try json(HealthAnswer(node: coordinator.nodeID, streams: coordinator.openStreamCount))
    }

    /// `GET /readyz`: 200 once Redis answers, the scripts are loaded and the subscription is
    /// live; 503 until then.
    @Sendable func ready(request: Request, context: BasicRequestContext) async throws -> Response {
        let checks = await coordinator.readiness()
        var response = try json(checks)
        if checks.values.contains(false) { response.status = .serviceUnavailable }
        return response
    }

    /// `GET /status`: this node and the fleet as Redis sees it; a page for browsers.
    @Sendable func status(request: Request, context: BasicRequestContext) async throws -> Response {
        if request.headers[values: .accept].contains(where: { $0.contains("text/html") }) {
            return page(WebAsset.status)
        }
        let fleet = (try? await coordinator.fleet()) ?? []
        let ready = await !coordinator.readiness().values.contains(false)
        return try json(
            StatusAnswer(
                node: coordinator.nodeID, ready: ready, access: configuration.access.rawValue, streams: coordinator.openStreamCount,
                uptimeSeconds: Date().timeIntervalSince(coordinator.startedAt), fleet: fleet.map { record in record.mapValues { "\($0)" } }))
    }

    /// `GET /metrics`: Prometheus text format.
    @Sendable func metrics(request: Request, context: BasicRequestContext) async throws -> Response {
        guard let metricsRegistry else { throw HTTPError(.notFound, message: "metrics are off") }
        try? await coordinator.refreshMembershipGauges()
        var bytes: [UInt8] = []
        metricsRegistry.emit(into: &bytes)
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// `GET /`: a new room with a random name.
    @Sendable func newRoom(request: Request, context: BasicRequestContext) async throws -> Response {
        let alphabet = Array("abcdefghijkmnpqrstuvwxyz23456789")
        let name = String((0..<10).map { _ in alphabet.randomElement()! })
        return Response(status: .found, headers: [.location: "/\(name)"])
    }

    /// `GET /:roomId`: the demo client's page for that room.
    @Sendable func roomPage(request: Request, context: BasicRequestContext) async throws -> Response {
        _ = try roomID(context)
        return page(WebAsset.index)
    }

    /// `GET /static/:file`: the demo client's scripts and styles.
    @Sendable func asset(request: Request, context: BasicRequestContext) async throws -> Response {
        guard let asset = context.parameters.get("file").flatMap(WebAsset.named) else {
            throw HTTPError(.notFound, message: "no such file")
        }
        return page(asset)
    }

    private func page(_ asset: WebAsset) -> Response {
        Response(
            status: .ok, headers: [.contentType: asset.contentType, .cacheControl: "no-cache"],
            body: .init(byteBuffer: ByteBuffer(string: asset.source)))
    }

    // MARK: Helpers

    /// The request body, up to the configured limit (413 with a JSON error beyond it).
    private func readBody(_ request: Request) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: configuration.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError.bodyTooLarge(limit: configuration.maxBodyBytes)
        }
    }

    /// Who the request's token speaks for: 401 without a token, 403 with a bad one.
    private func authenticate(_ request: Request) async throws -> TokenAuthority.Identity {
        try await tokens.authenticate(request.headers, request.uri)
    }

    private func roomID(_ context: BasicRequestContext) throws -> RoomID {
        guard let room = context.parameters.get("roomId").flatMap(RoomID.init) else { throw APIError.invalidID("room id") }
        return room
    }

    /// An answer's JSON, its keys sorted. Typed: `JSONSerialization` of a dictionary of `Any`
    /// was over a quarter of the node's CPU for a `GET /healthz`.
    private func json(_ answer: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(answer))))
    }

    private struct TokenAnswer: Encodable { let token: String }
    private struct LeaveAnswer: Encodable {
        let roomId: String
        var left = true
    }
    /// `peers` when joined, `alreadyMember` when not (nil fields are left out).
    private struct JoinAnswer: Encodable {
        let roomId: String
        let joined: Bool
        var peers: Int?
        var alreadyMember: Bool?
    }
    private struct HealthAnswer: Encodable {
        var status = "ok"
        let node: String
        let streams: Int
    }
    private struct StatusAnswer: Encodable {
        let node: String
        let ready: Bool
        let access: String
        let streams: Int
        let uptimeSeconds: Double
        let fleet: [[String: String]]
    }
}

/// Relay bodies go into SSE `data:` lines, so they must be JSON without line breaks.
public enum RelayBody {
    /// The body as JSON text on one line, or nil if it is not JSON. An empty body is `{}` (as
    /// the original's body parser gave). Line breaks in valid JSON can only be whitespace
    /// between tokens (inside strings they must be escaped), so they become spaces.
    public static func compactJSON(_ body: ByteBuffer) -> String? {
        guard body.readableBytes > 0 else { return "{}" }
        guard body.withUnsafeReadableBytes(JSONSyntax.isValid) else { return nil }
        let bytes = body.readableBytesView
        guard bytes.contains(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }) else {
            return String(validating: bytes, as: UTF8.self)
        }
        let oneLine = bytes.map { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") ? UInt8(ascii: " ") : $0 }
        return String(validating: oneLine, as: UTF8.self)
    }
}
