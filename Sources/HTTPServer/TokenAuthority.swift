import Coordinator
import Foundation
import JWTKit
import NIOConcurrencyHelpers

/// Issues and verifies the HS256 tokens of `POST /access`: payload `{id, username, iat, exp}`.
/// Only HS256 with this node's secret verifies; `alg: none` and every other algorithm fail,
/// and so does an expired token.
public struct TokenAuthority: Sendable {
    private let keys: JWTKeyCollection
    public let lifetime: TimeInterval
    /// Tokens already verified, until they expire: a browser sends the same token with every
    /// request, and an HMAC check plus JSON decoding per relay is work for nothing.
    private let verified = VerifiedTokens(capacity: 100_000)

    /// HS256 needs a key at least as long as its hash.
    public static let minimumSecretLength = 32

    public struct SecretTooShort: Error, CustomStringConvertible {
        public let length: Int
        public var description: String {
            "token secret is \(length) bytes; HS256 needs at least \(TokenAuthority.minimumSecretLength)"
        }
    }

    public init(secret: String, lifetime: TimeInterval = 3600) async throws {
        guard secret.utf8.count >= Self.minimumSecretLength else { throw SecretTooShort(length: secret.utf8.count) }
        keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        self.lifetime = lifetime
    }

    /// A random secret for a single node that was given none.
    public static func randomSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max, using: &generator)) }.joined()
    }

    struct Payload: JWTPayload {
        var id: PeerID
        var username: String
        var iat: IssuedAtClaim
        var exp: ExpirationClaim

        func verify(using algorithm: some JWTAlgorithm) throws {
            try exp.verifyNotExpired()
        }
    }

    /// A token for a new peer: a fresh id and the given name.
    public func issue(username: String, now: Date = Date()) async throws -> (token: String, user: PeerUser) {
        let user = PeerUser(id: PeerID(UUID().uuidString.lowercased())!, username: username)
        return (try await issue(for: user, now: now), user)
    }

    /// A token for `user`, valid for `lifetime` from now: a renewal keeps the peer's id, and so
    /// its session.
    public func issue(for user: PeerUser, now: Date = Date()) async throws -> String {
        let now = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))  // whole seconds, as JWTs usually carry
        let payload = Payload(id: user.id, username: user.username, iat: .init(value: now), exp: .init(value: now + lifetime))
        return try await keys.sign(payload)
    }

    /// The peer a token speaks for, or nil if the token is not valid now.
    public func verify(_ token: String, now: Date = Date()) async -> PeerUser? {
        if let user = verified.user(for: token, at: now) { return user }
        guard let payload = try? await keys.verify(token, as: Payload.self),
            PeerUser.isValidUsername(payload.username)
        else { return nil }
        let user = PeerUser(id: payload.id, username: payload.username)
        verified.remember(token, user: user, until: payload.exp.value)
        return user
    }
}

/// A bounded map of verified tokens to their peers, each valid until its token's expiry.
final class VerifiedTokens: Sendable {
    private let capacity: Int
    private let entries = NIOLockedValueBox<[String: (user: PeerUser, expires: Date)]>([:])

    init(capacity: Int) { self.capacity = capacity }

    func user(for token: String, at now: Date) -> PeerUser? {
        entries.withLockedValue { entries in
            guard let entry = entries[token] else { return nil }
            guard entry.expires > now else {
                entries[token] = nil
                return nil
            }
            return entry.user
        }
    }

    func remember(_ token: String, user: PeerUser, until expires: Date) {
        entries.withLockedValue { entries in
            // Full: start over rather than track recency; a miss only costs one verification.
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[token] = (user, expires)
        }
    }
}
