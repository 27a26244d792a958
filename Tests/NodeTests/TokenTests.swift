import Coordinator
import Foundation
import HTTPServer
import JWTKit
import Testing

@Suite("Tokens: HS256 only, expiry enforced")
struct TokenTests {
    static let secret = String(repeating: "k", count: 64)  // long enough for HS512 too

    @Test func issuedTokensVerify() async throws {
        let authority = try await TokenAuthority(secret: Self.secret)
        let (token, user) = try await authority.issue(username: "ann")
        #expect(await authority.verify(token) == user)
        let payload = try #require(Data(base64URL: String(token.split(separator: ".")[1])))
        let claims = try #require(try JSONSerialization.jsonObject(with: payload) as? [String: Any])
        #expect(Set(claims.keys) == ["id", "username", "iat", "exp"])
        #expect((claims["exp"] as? Double).map { $0 - (claims["iat"] as? Double ?? 0) } == 3600)
    }

    @Test func expiredTokensFail() async throws {
        let authority = try await TokenAuthority(secret: Self.secret)
        let (token, _) = try await authority.issue(username: "ann", now: Date() - 3601)
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
