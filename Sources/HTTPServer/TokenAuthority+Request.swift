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

    /// The token of an `Authorization: Bearer …` header, if there is one. Read as bytes: every
    /// API call but `/access` comes through here, and Foundation's trimming cost 4% of a
    /// loaded node's CPU.
    static func bearerToken(_ headers: HTTPFields) -> String? {
        guard let header = headers.value(of: .authorization) else { return nil }
        let scheme = "bearer ".utf8
        let bytes = header.utf8
        guard bytes.count > scheme.count, zip(bytes, scheme).allSatisfy({ Self.lowercased($0) == $1 }) else { return nil }
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = bytes.dropFirst(scheme.count).firstIndex(where: { !isBlank($0) }),
            let last = bytes.lastIndex(where: { !isBlank($0) })
        else { return nil }
        return String(header[first...last])
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 : byte
    }
}
