import Foundation
import HTTPServer
import JWTKit
import SignalingClient
import Testing

/// DESIGN.md: everything wrong gets a clear 4xx with a JSON error body, and changes nothing.
@Suite("Bad input: documented status, JSON error, nothing changed in Redis")
struct BadInputTests {
    struct Row: Sendable, CustomTestStringConvertible {
        let name: String
        let method: String
        let path: String
        let headers: [(String, String)]
        let body: String?
        let token: Token
        let status: Int
        var access: AccessMode = .open
        /// Whether the node has `--previous-token-secret` set to `previousSecret`.
        var knowsPreviousSecret = true
        var testDescription: String { name }

        enum Token: Sendable {
            case none, ann, bob, literal(String)
            /// A token for ann's peer, minted as an application's backend would.
            case minted(Minted)
        }

        enum Minted: Sendable {
            case rooms([String]), roomsNotAList(String), roomsNull, notBefore(TimeInterval), signedWith(String)
        }

        init(
            _ name: String, _ method: String, _ path: String, token: Token = .ann, headers: [(String, String)] = [], body: String? = nil,
            access: AccessMode = .open, knowsPreviousSecret: Bool = true, status: Int
        ) {
            (self.name, self.method, self.path, self.token, self.headers, self.body, self.status) = (name, method, path, token, headers, body, status)
            (self.access, self.knowsPreviousSecret) = (access, knowsPreviousSecret)
        }
    }

    /// Fleet nodes know this as the previous secret (rotation); tokens signed with the one
    /// after it verify nowhere.
    static let previousSecret = String(repeating: "previous-secret-", count: 2)
    static let unknownSecret = String(repeating: "unknown-secret--", count: 2)

    static let secret = Fleet.secret

    /// Tokens that must all be refused: expired, signed with another secret, `alg: none`.
    static func badTokens() async throws -> [(String, String)] {
        let real = try await TokenAuthority(secret: secret)
        let expired = try await real.issue(username: "x", now: Date() - 7200).token
        let stranger = try await TokenAuthority(secret: String(repeating: "z", count: 32)).issue(username: "x").token
        let header = Data(#"{"alg":"none","typ":"JWT"}"#.utf8).base64URLEncoded()
        let payload = Data(#"{"id":"p1","username":"x","iat":1,"exp":\#(Int(Date().timeIntervalSince1970) + 60)}"#.utf8).base64URLEncoded()
        return [("expired", expired), ("wrong secret", stranger), ("alg none", "\(header).\(payload)."), ("malformed", "a.b.c")]
    }

    static let rows: [Row] = [
        Row("join without a token", "POST", "/r/join", token: .none, status: 401),
        Row("connect without a token", "GET", "/connect", token: .none, headers: [("Accept", "text/event-stream")], status: 401),
        Row("connect without Accept", "GET", "/connect", status: 406),
        Row("room id too long", "POST", "/\(String(repeating: "r", count: 65))/join", status: 400),
        Row("room id with braces", "POST", "/a%7Bb%7D/join", status: 400),
        Row("room id with a colon", "POST", "/a:b/join", status: 400),
        Row("room id with a space", "POST", "/a%20b/join", status: 400),
        Row("room id with CR LF", "POST", "/a%0D%0Ab/join", status: 400),
        Row("peer id with braces", "POST", "/relay/a%7Bb%7D/offer", body: "{}", status: 400),
        Row("peer id too long", "POST", "/relay/\(String(repeating: "p", count: 65))/offer", body: "{}", status: 400),
        Row("event name with LF (SSE frame forgery)", "POST", "/relay/BOB/a%0Aevent:%20x", body: "{}", status: 400),
        Row("event name over 64 characters", "POST", "/relay/BOB/\(String(repeating: "e", count: 65))", body: "{}", status: 400),
        Row("relay body not JSON", "POST", "/relay/BOB/offer", body: "{nope", status: 400),
        Row("relay body over 64 KiB", "POST", "/relay/BOB/offer", body: "\"" + String(repeating: "x", count: 65 * 1024) + "\"", status: 413),
        Row("access body not JSON", "POST", "/access", token: .none, body: "username=ann", status: 400),
        Row("access with a control character in the name", "POST", "/access", token: .none, body: #"{"username":"a\u0007b"}"#, status: 400),
        Row("join without an open stream", "POST", "/r/join", token: .bob, status: 409),
        Row("relay to an unknown peer", "POST", "/relay/nobody/offer", body: "{}", status: 404),
        Row("relay to a peer in no shared room", "POST", "/relay/CAROL/offer", body: "{}", status: 403),
        Row("leave a room one is not in", "POST", "/elsewhere/leave", status: 404),
        Row("/access when access is off", "POST", "/access", token: .none, body: #"{"username":"ann"}"#, access: .off, status: 404),
        Row("renewal when access is off", "POST", "/access", access: .off, status: 404),
        Row("join outside the token's rooms", "POST", "/x/join", token: .minted(.rooms(["lobby"])), status: 403),
        Row("join outside a prefix grant", "POST", "/team-43-call/join", token: .minted(.rooms(["team-42-*"])), status: 403),
        Row("join with an empty grant", "POST", "/x/join", token: .minted(.rooms([])), status: 403),
        Row("rooms claim with a bad room id", "POST", "/x/join", token: .minted(.rooms(["x", "a{b}"])), status: 403),
        Row("rooms claim not a list", "POST", "/x/join", token: .minted(.roomsNotAList("x")), status: 403),
        Row("rooms claim null", "POST", "/x/join", token: .minted(.roomsNull), status: 403),
        Row("token not valid yet (nbf)", "POST", "/x/join", token: .minted(.notBefore(300)), status: 403),
        Row("token signed with a secret the node does not know", "POST", "/x/join", token: .minted(.signedWith(unknownSecret)), status: 403),
        Row("token signed with the previous secret, on a node without --previous-token-secret", "POST", "/x/join",
            token: .minted(.signedWith(previousSecret)), knowsPreviousSecret: false, status: 403),
    ]

    @Test(arguments: rows)
    func refused(_ row: Row) async throws {
        let configuration = NodeConfiguration(host: "127.0.0.1", port: 0, relayRate: 0, joinRate: 0, access: row.access)
        try await Fleet.with(nodes: 1, configuration: configuration, previousSecret: row.knowsPreviousSecret ? Self.previousSecret : nil) { fleet in
            let client = fleet.client(0)
            let ann = try await Participant.connect("ann", fleet: fleet, node: 0, access: row.access)
            let carol = try await Participant.connect("carol", fleet: fleet, node: 0, access: row.access)
            let bob = try await Participant.token("bob", access: row.access, fleet: fleet)  // a token, but no stream
            _ = try await client.request(.POST, "/r/join", token: ann.token)
            let before = try await fleet.snapshot()

            let token: String? = switch row.token {
            case .none: nil
            case .ann: ann.token
            case .bob: bob
            case .literal(let text): text
            case .minted(.rooms(let rooms)): try await TestTokens.mint(id: ann.id, rooms: rooms, secret: Fleet.secret)
            case .minted(.roomsNotAList(let rooms)): try await TestTokens.mint(id: ann.id, rooms: rooms, secret: Fleet.secret)
            case .minted(.roomsNull): try await TestTokens.mint(id: ann.id, rooms: TestTokens.ExplicitNull(), secret: Fleet.secret)
            case .minted(.notBefore(let seconds)): try await TestTokens.mint(id: ann.id, notBefore: Date() + seconds, secret: Fleet.secret)
            case .minted(.signedWith(let secret)): try await TestTokens.mint(id: ann.id, secret: secret)
            }
            let path = row.path.replacingOccurrences(of: "BOB", with: ann.id).replacingOccurrences(of: "CAROL", with: carol.id)
            let response = try await client.request(.init(rawValue: row.method), path, token: token, headers: row.headers, body: row.body)
            #expect(response.status == row.status, "\(row.name): \(response.body)")
            #expect((json(response.body)["error"] as? [String: Any])?["message"] is String, "\(row.name): \(response.body)")
            let after = try await fleet.snapshot()
            #expect(after == before, "\(row.name) changed Redis: \(changes(from: before, to: after))")
            ann.stream.close()
            carol.stream.close()
        }
    }

    @Test func badTokensAreRefusedWith403() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let before = try await fleet.snapshot()
            for (name, token) in try await Self.badTokens() {
                for (method, path) in [("POST", "/r/join"), ("POST", "/relay/x/offer"), ("GET", "/connect")] {
                    let response = try await fleet.client(0).request(
                        .init(rawValue: method), path, token: token, headers: [("Accept", "text/event-stream")], body: method == "POST" ? "{}" : nil)
                    #expect(response.status == 403, "\(name) on \(path)")
                    #expect(json(response.body)["error"] != nil)
                }
            }
            let after = try await fleet.snapshot()
            #expect(after == before, "\(changes(from: before, to: after))")
        }
    }

    /// A browser reconnecting across a rolling upgrade sends an id of the older version: a 400
    /// would end its EventSource for good, so it gets a fresh session instead.
    @Test func aLastEventIDThisServiceCannotUseStartsAFreshSession() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let token = try await fleet.client(0).access(username: "ann")
            for id in ["1795345739537-0-1;lobby=1795345739540-0-2", "12;r={x}=1-0", "1795345739537-0", "not an id"] {
                let stream = try await fleet.client(0).connect(token: token, lastEventID: id)
                let connected = await stream.next()
                #expect(connected?.event == "connected", "\(id)")
                #expect(json(connected?.data ?? "")["resumed"] == nil, "\(id): \(connected?.data ?? "")")
                stream.close()
            }
        }
    }

    @Test func aSecondStreamReplacesTheFirst() async throws {
        try await Fleet.with(nodes: 2) { fleet in
            let token = try await fleet.client(0).access(username: "ann")
            let first = try await fleet.client(0).connect(token: token)
            #expect(await first.next()?.event == "connected")
            let second = try await fleet.client(1).connect(token: token)
            #expect(await second.next()?.event == "connected")
            #expect(await nextSignal(first)?.event == "replaced")
            #expect(await first.next() == nil)  // and then the stream ends
            // The new stream is the peer's: relays reach it.
            let bob = try await Participant.connect("bob", fleet: fleet, node: 0)
            _ = try await fleet.client(0).request(.POST, "/r/join", token: token)
            _ = try await fleet.client(0).request(.POST, "/r/join", token: bob.token)
            #expect(await nextSignal(second)?.event == "add-peer")
            second.close()
            bob.stream.close()
        }
    }
}
