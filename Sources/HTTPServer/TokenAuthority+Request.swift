import HTTPTypes
import Hummingbird
import HummingbirdCore

extension TokenAuthority {
    /// Who a request's token speaks for: the token of `Authorization: Bearer …`, else of
    /// `?token=` (an EventSource cannot set headers). 401 without a token, 403 with a bad one.
    func authenticate(_ headers: HTTPFields, _ uri: URI) async throws -> Identity {
        let token = Self.bearerToken(headers) ?? uri.queryParameters["token"].map(String.init)
        guard let token, !token.isEmpty else { throw APIError.missingToken }
        guard let identity = await verify(token) else { throw APIError.invalidToken }
        return identity
    }

    /// The token of an `Authorization: Bearer …` header, if there is one.
    static func bearerToken(_ headers: HTTPFields) -> String? {
        guard let header = headers[.authorization], header.lowercased().hasPrefix("bearer ") else { return nil }
        let token = header.dropFirst("bearer ".count).trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }
}
