import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Answers written on the connection itself rather than by Hummingbird (`EventStreamHandler`,
/// `RelayHandler`), with what Hummingbird and its middleware add to the others: the origin
/// check of `OriginFilter`, the headers of `CORSMiddleware`, the server's name and the date,
/// and errors as `{"error": {"message": "..."}}`.
struct DirectAnswers: Sendable {
    /// Origins a browser may call from; nil for any.
    let allowedOrigins: Set<String>?

    static let serverName = "switchboard"

    /// A browser's origin that is not allowed, as `OriginFilter` refuses it. A request without
    /// one (not from a browser) passes.
    func refusesOrigin(of request: HTTPRequest) -> Bool {
        guard let allowedOrigins, let origin = request.headerFields.value(of: .origin) else { return false }
        return !allowedOrigins.contains(origin)
    }

    /// The headers every direct answer to `request` starts from: the server and the date, and
    /// the allowed origin echoed (any origin: `*`) so that a page on another origin may read
    /// it, as `CORSMiddleware` does. A refused origin gets none, as from `OriginFilter`.
    func headers(for request: HTTPRequest) -> HTTPFields {
        var headers: HTTPFields = [.server: Self.serverName, .date: HTTPDate.shared.now]
        guard let origin = request.headerFields.value(of: .origin) else { return headers }
        if let allowedOrigins {
            guard allowedOrigins.contains(origin) else { return headers }
            headers[.accessControlAllowOrigin] = origin
            headers[.vary] = "Origin"
        } else {
            headers[.accessControlAllowOrigin] = "*"
        }
        return headers
    }

    /// A JSON answer with its length, typed as the API's routes type theirs.
    func json(
        _ status: HTTPResponse.Status, _ body: ByteBuffer, for request: HTTPRequest, contentType: String = "application/json",
        extraHeaders: HTTPFields = [:]
    ) -> (HTTPResponse, ByteBuffer) {
        var headers = headers(for: request)
        headers.append(contentsOf: extraHeaders)
        headers[.contentType] = contentType
        headers[.contentLength] = String(body.readableBytes)
        return (HTTPResponse(status: status, headerFields: headers), body)
    }

    /// Whether the client asked for the connection to close after this request's answer.
    static func asksToClose(_ request: HTTPRequest) -> Bool {
        request.headerFields.value(of: .connection)?.lowercased().contains("close") ?? false
    }

    /// A refusal as Hummingbird gives an `HTTPError`.
    func refusal(_ error: HTTPError, for request: HTTPRequest) -> (HTTPResponse, ByteBuffer) {
        struct Body: Encodable {
            struct Message: Encodable { let message: String }
            let error: Message
        }
        let body = (try? JSONEncoder().encode(Body(error: .init(message: error.body ?? "")))) ?? Data()
        return json(
            error.status, ByteBuffer(bytes: body), for: request, contentType: "application/json; charset=utf-8", extraHeaders: error.headers)
    }
}
