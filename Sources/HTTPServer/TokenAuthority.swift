import Coordinator
import Foundation
import JWTKit
import NIOConcurrencyHelpers

/// Issues and verifies the HS256 tokens of `POST /access`, and those an application's backend
/// mints with the fleet's secret: payload `{id, username, iat, exp}`, with optional `nbf` and
/// `rooms` (see `RoomGrants`). Only HS256 with this node's secret, or its previous one while a
/// fleet rotates secrets, verifies; `alg: none` and every other algorithm fail, and so does an
/// expired token or one not valid yet (both with `clockLeeway`).
public struct TokenAuthority: Sendable {
    /// Signs every new token, and verifies.
    private let current: JWTKeyCollection
    /// Only verifies: tokens signed before the fleet moved to `current`, until they expire.
    /// (A second key in one collection without key ids would replace the signing key.)
    private let previous: JWTKeyCollection?
    public let lifetime: TimeInterval
    /// Tokens already verified, until they expire: a browser sends the same token with every
    /// request, and an HMAC check plus JSON decoding per relay is work for nothing.
    private let verified = VerifiedTokens(capacity: 100_000)

    /// HS256 needs a key at least as long as its hash.
    public static let minimumSecretLength = 32
    /// How far `exp` and `nbf` may be off: an application's backend and the nodes do not share
    /// one clock.
    public static let clockLeeway: TimeInterval = 30
    /// The longest lifetime `switchboard token` signs.
    public static let maximumLifetime: TimeInterval = 7 * 24 * 3600

    public struct SecretTooShort: Error, CustomStringConvertible {
        public let length: Int
        public var description: String {
            "token secret is \(length) bytes; HS256 needs at least \(TokenAuthority.minimumSecretLength)"
        }
    }

    /// Who a valid token speaks for, the rooms it grants, and how long it was issued for.
    public struct Identity: Sendable {
        public let user: PeerUser
        public let rooms: RoomGrants
        /// `exp - iat`: a renewal lasts as long as the original did.
        public let lifetime: TimeInterval
    }

    /// - Parameters:
    ///   - secret: signs new tokens and verifies; used as its UTF-8 bytes.
    ///   - previousSecret: also verifies, while a fleet moves from it to `secret`.
    public init(secret: String, previousSecret: String? = nil, lifetime: TimeInterval = 3600) async throws {
        current = try await Self.keys(secret)
        previous = if let previousSecret { try await Self.keys(previousSecret) } else { nil }
        self.lifetime = lifetime
    }

    private static func keys(_ secret: String) async throws -> JWTKeyCollection {
        guard secret.utf8.count >= minimumSecretLength else { throw SecretTooShort(length: secret.utf8.count) }
        return await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
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
        var nbf: NotBeforeClaim?
        var rooms: [String]?

        init(id: PeerID, username: String, iat: IssuedAtClaim, exp: ExpirationClaim, nbf: NotBeforeClaim? = nil, rooms: [String]? = nil) {
            (self.id, self.username, self.iat, self.exp, self.nbf, self.rooms) = (id, username, iat, exp, nbf, rooms)
        }

        private enum CodingKeys: String, CodingKey { case id, username, iat, exp, nbf, rooms }

        init(from decoder: Decoder) throws {
            let claims = try decoder.container(keyedBy: CodingKeys.self)
            id = try claims.decode(PeerID.self, forKey: .id)
            username = try claims.decode(String.self, forKey: .username)
            iat = try claims.decode(IssuedAtClaim.self, forKey: .iat)
            exp = try claims.decode(ExpirationClaim.self, forKey: .exp)
            nbf = try claims.decodeIfPresent(NotBeforeClaim.self, forKey: .nbf)
            // Present, the claim must be a list: `"rooms": null` granting every room would turn
            // a backend's missing value into access everywhere.
            rooms = claims.contains(.rooms) ? try claims.decode([String].self, forKey: .rooms) : nil
        }

        func verify(using algorithm: some JWTAlgorithm) throws {
            let now = Date()
            try exp.verifyNotExpired(currentDate: now - TokenAuthority.clockLeeway)
            try nbf?.verifyNotBefore(currentDate: now + TokenAuthority.clockLeeway)
            if let rooms, RoomGrants(claim: rooms) == nil {
                throw JWTError.claimVerificationFailure(failedClaim: nil, reason: "rooms: every entry must be a room id, a room-id prefix ending in *, or *")
            }
        }
    }

    /// A token for a new peer: a fresh id and the given name.
    public func issue(username: String, now: Date = Date()) async throws -> (token: String, user: PeerUser) {
        let user = PeerUser(id: PeerID(UUID().uuidString.lowercased())!, username: username)
        return (try await issue(for: user, now: now), user)
    }

    /// A token for `user`, valid for `lifetime` (or this node's) from now: a renewal keeps the
    /// peer's id, and so its session, its room grants and its lifetime.
    public func issue(for user: PeerUser, rooms: RoomGrants = .all, lifetime: TimeInterval? = nil, now: Date = Date()) async throws -> String {
        let now = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))  // whole seconds, as JWTs usually carry
        let payload = Payload(
            id: user.id, username: user.username, iat: .init(value: now), exp: .init(value: now + (lifetime ?? self.lifetime)),
            rooms: rooms.claim)
        return try await current.sign(payload)
    }

    /// The peer a token speaks for and what it grants, or nil if the token is not valid now.
    public func verify(_ token: String, now: Date = Date()) async -> Identity? {
        if let identity = verified.identity(for: token, at: now) { return identity }
        var verified: Payload? = try? await current.verify(token, as: Payload.self)
        if verified == nil, let previous { verified = try? await previous.verify(token, as: Payload.self) }
        guard let payload = verified, PeerUser.isValidUsername(payload.username) else { return nil }
        let identity = Identity(
            user: PeerUser(id: payload.id, username: payload.username), rooms: payload.rooms.flatMap(RoomGrants.init(claim:)) ?? .all,
            lifetime: max(1, payload.exp.value.timeIntervalSince(payload.iat.value)))
        // Remembered until it expires (with the leeway); a token not valid yet never got here.
        self.verified.remember(token, identity: identity, until: payload.exp.value + Self.clockLeeway)
        return identity
    }
}

/// A bounded map of verified tokens to their peers, each valid until its token's expiry.
final class VerifiedTokens: Sendable {
    private let capacity: Int
    private let entries = NIOLockedValueBox<[String: (identity: TokenAuthority.Identity, expires: Date)]>([:])

    init(capacity: Int) { self.capacity = capacity }

    func identity(for token: String, at now: Date) -> TokenAuthority.Identity? {
        entries.withLockedValue { entries in
            guard let entry = entries[token] else { return nil }
            guard entry.expires > now else {
                entries[token] = nil
                return nil
            }
            return entry.identity
        }
    }

    func remember(_ token: String, identity: TokenAuthority.Identity, until expires: Date) {
        entries.withLockedValue { entries in
            // Full: start over rather than track recency; a miss only costs one verification.
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[token] = (identity, expires)
        }
    }
}
