import Coordinator
import Hummingbird
import RedisClient

/// The errors the API answers with. Each becomes a status and a JSON body
/// `{"error": {"message": "..."}}`.
enum APIError {
    static func badRequest(_ message: String) -> HTTPError { HTTPError(.badRequest, message: message) }
    static let missingToken = HTTPError(
        .unauthorized, message: "missing token: send 'Authorization: Bearer <token>' or '?token=<token>'")
    static let invalidToken = HTTPError(.forbidden, message: "invalid or expired token")
    static let notEventStream = HTTPError(
        .notAcceptable, message: "GET /connect is an event stream: send 'Accept: text/event-stream'")
    static let noOpenStream = HTTPError(
        .conflict, message: "no open event stream for this peer: open GET /connect first")
    static func invalidID(_ what: String) -> HTTPError {
        badRequest("invalid \(what): use \(identifierRule)")
    }
    static let originNotAllowed = HTTPError(.forbidden, message: "origin not allowed")
    static let roomFull = HTTPError(.conflict, message: "the room is full")
    static func roomNotGranted(_ room: RoomID) -> HTTPError {
        HTTPError(.forbidden, message: "your token does not grant room '\(room)'")
    }
    static let accessOff = HTTPError(
        .notFound, message: "POST /access is off on this node (--access off): tokens come from the application's backend")
    static func bodyTooLarge(limit: Int) -> HTTPError { HTTPError(.contentTooLarge, message: "body over \(limit) bytes") }
    static let tooManyRooms = HTTPError(.conflict, message: "in too many rooms: leave one first")

    static func tooManyRequests(retryAfter: Duration) -> HTTPError {
        let seconds = max(1, Int(retryAfter.inSeconds.rounded(.up)))
        return HTTPError(.tooManyRequests, headers: [.retryAfter: String(seconds)], message: "too many requests: retry after \(seconds) s")
    }

    /// Redis unreachable: tell the client to come back shortly.
    static func unavailable(_ error: RedisConnectionError) -> HTTPError {
        let retryAfter = switch error {
        case .unavailable(let ms): max(1, (ms + 999) / 1000)
        default: 1
        }
        return HTTPError(
            .serviceUnavailable, headers: [.retryAfter: String(retryAfter)],
            message: "signaling store unavailable, retry shortly")
    }
}

/// Runs a coordinator call, turning a Redis outage (or a refusal that passes by itself, such
/// as `LOADING`) into 503 instead of 500.
func withRedis<T>(_ operation: () async throws -> T) async throws -> T {
    do {
        return try await operation()
    } catch let error as RedisConnectionError {
        throw APIError.unavailable(error)
    } catch let error as RedisServerError where error.isTransient {
        throw APIError.unavailable(.unavailable(retryAfterMilliseconds: 1000))
    }
}
