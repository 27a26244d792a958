import Coordinator
import Foundation
import HTTPTypes
@testable import HTTPServer
import JWTKit
import Testing

@Suite("Tokens: HS256 only, expiry enforced")
struct TokenTests {
    static let secret = String(repeating: "k", count: 64)  // long enough for HS512 too

    @Test func issuedTokensVerify() async throws {
        let authority = try await TokenAuthority(secret: Self.secret)
        let (token, user) = try await authority.issue(username: "ann")
        #expect(await authority.verify(token)?.user == user)
        #expect(await authority.verify(token)?.rooms == .all)
        let payload = try #require(Data(base64URL: String(token.split(separator: ".")[1])))
        let claims = try #require(try JSONSerialization.jsonObject(with: payload) as? [String: Any])
        #expect(Set(claims.keys) == ["id", "username", "iat", "exp"])
        #expect((claims["exp"] as? Double).map { $0 - (claims["iat"] as? Double ?? 0) } == 3600)
    }

    @Test func expiredTokensFail() async throws {
        let authority = try await TokenAuthority(secret: Self.secret)
        let (token, _) = try await authority.issue(username: "ann", now: Date() - 3600 - TokenAuthority.clockLeeway - 1)
        #expect(await authority.verify(token) == nil)
    }

    @Test func otherSecretsAndAlgorithmsFail() async throws {
        let authority = try await TokenAuthority(secret: Self.secret)
        let stranger = try await TokenAuthority(secret: String(repeating: "x", count: 32))
        #expect(await authority.verify(try await stranger.issue(username: "ann").token) == nil)

        // Same secret, HS512: the algorithm is refused, not just the signature.
        struct Claims: JWTPayload {
            var id: String, username: String, iat: IssuedAtClaim, exp: ExpirationClaim
            func verify(using algorithm: some JWTAlgorithm) throws {}
        }
        let claims = Claims(id: "p1", username: "ann", iat: .init(value: Date()), exp: .init(value: Date() + 60))
        let hs512 = JWTKeyCollection()
        await hs512.add(hmac: HMACKey(from: Self.secret), digestAlgorithm: .sha512)
        #expect(await authority.verify(try await hs512.sign(claims)) == nil)

        // alg: none, with and without a signature part.
        let header = Data(#"{"alg":"none","typ":"JWT"}"#.utf8).base64URLEncoded()
        let exp = Int(Date().timeIntervalSince1970) + 60
        let body = Data(#"{"id":"p1","username":"ann","iat":1,"exp":\#(exp)}"#.utf8).base64URLEncoded()
        #expect(await authority.verify("\(header).\(body).") == nil)
        #expect(await authority.verify("\(header).\(body)") == nil)
        #expect(await authority.verify("") == nil)
    }

    @Test func shortSecretsAreRefused() async {
        await #expect(throws: TokenAuthority.SecretTooShort.self) { try await TokenAuthority(secret: "short") }
        await #expect(throws: TokenAuthority.SecretTooShort.self) {
            try await TokenAuthority(secret: Self.secret, previousSecret: "short")
        }
    }

    @Test func notBeforeAndExpiryAllowTheClockLeeway() async throws {
        let authority = try await TokenAuthority(secret: Self.secret)
        let leeway = TokenAuthority.clockLeeway
        func verifies(notBefore: TimeInterval? = nil, expires: TimeInterval = 60) async throws -> Bool {
            let token = try await TestTokens.mint(id: "p1", notBefore: notBefore.map { Date() + $0 }, expires: Date() + expires, secret: Self.secret)
            return await authority.verify(token) != nil
        }
        #expect(try await verifies(notBefore: leeway - 10))  // a backend clock a little ahead
        #expect(try await !verifies(notBefore: leeway + 60))
        #expect(try await verifies(expires: -(leeway - 10)))  // a node clock a little ahead
        #expect(try await !verifies(expires: -(leeway + 60)))
    }

    @Test func roomsClaimsAreCheckedAndGrantWhatTheySay() async throws {
        let authority = try await TokenAuthority(secret: Self.secret)
        func grants(_ rooms: some Codable & Sendable) async throws -> RoomGrants? {
            await authority.verify(try await TestTokens.mint(id: "p1", rooms: rooms, secret: Self.secret))?.rooms
        }
        let granted = try #require(try await grants(["lobby", "team-42-*"]))
        #expect(granted.allows(RoomID("lobby")!) && granted.allows(RoomID("team-42-call")!) && granted.allows(RoomID("team-42-")!))
        #expect(!granted.allows(RoomID("team-43-call")!) && !granted.allows(RoomID("lobby2")!))
        #expect(try await grants(["*"])?.allows(RoomID("anything")!) == true)
        #expect(try await grants([String]())?.allows(RoomID("lobby")!) == false)
        // A claim of the wrong shape makes the whole token invalid.
        for bad in [["a{b}"], ["team-*-x*"], ["*x"], [""], [String(repeating: "r", count: 65)]] {
            #expect(try await grants(bad) == nil, "\(bad)")
        }
        #expect(try await grants("lobby") == nil)
        #expect(try await grants(TestTokens.ExplicitNull()) == nil)
        #expect(try await grants([1, 2]) == nil)
    }

    /// While a fleet rotates its secret, tokens signed with the previous one still verify, and
    /// new ones are signed with the current one only.
    /// `Authorization: Bearer …`, its scheme in any case and blanks around the token; nothing
    /// else is taken for a token.
    @Test func bearerTokensAreReadFromTheAuthorizationHeader() {
        func token(_ value: String) -> String? { TokenAuthority.bearerToken([.authorization: value]) }
        #expect(token("Bearer abc.def") == "abc.def")
        #expect(token("bEaReR \t abc  ") == "abc")
        #expect(token("Bearer ") == nil)
        #expect(token("Bearer  \t ") == nil)
        #expect(token("Basic abc") == nil)
        #expect(token("Bearerabc") == nil)
        #expect(token("Bear") == nil)
        #expect(TokenAuthority.bearerToken([:]) == nil)
    }

    @Test func thePreviousSecretVerifiesButNeverSigns() async throws {
        let (old, new) = (String(repeating: "o", count: 32), String(repeating: "n", count: 32))
        let rotating = try await TokenAuthority(secret: new, previousSecret: old)
        let before = try await TokenAuthority(secret: old)
        let fromBefore = try await before.issue(username: "ann").token
        #expect(await rotating.verify(fromBefore) != nil)
        let fresh = try await rotating.issue(username: "bob").token
        #expect(await rotating.verify(fresh) != nil)
        #expect(await before.verify(fresh) == nil)
        #expect(try await TokenAuthority(secret: new).verify(fromBefore) == nil)
    }
}

/// Tokens minted by hand, as an application's backend would, with any claims.
enum TestTokens {
    /// Encodes as JSON `null` (a claim present, but null).
    struct ExplicitNull: Codable, Sendable {
        init() {}
        init(from decoder: Decoder) throws {}
        func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encodeNil()
        }
    }

    struct Claims<Rooms: Codable & Sendable>: JWTPayload {
        var id: String
        var username: String
        var iat: IssuedAtClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim?
        var rooms: Rooms?
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    static func mint<Rooms: Codable & Sendable>(
        id: String, username: String = "ann", rooms: Rooms? = [String]?.none, notBefore: Date? = nil, expires: Date = Date() + 3600,
        secret: String
    ) async throws -> String {
        let claims = Claims(id: id, username: username, iat: .init(value: Date()), exp: .init(value: expires), nbf: notBefore.map { .init(value: $0) }, rooms: rooms)
        return try await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256).sign(claims)
    }
}

extension Data {
    init?(base64URL text: String) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        self.init(base64Encoded: base64)
    }

    func base64URLEncoded() -> String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
