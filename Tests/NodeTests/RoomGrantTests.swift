import Foundation
import HTTPServer
import SignalingClient
import Testing

/// Tokens from an application's backend: room grants, secret rotation. (The refusals are rows
/// of `BadInputTests`.)
@Suite("Room grants and secret rotation")
struct RoomGrantTests {
    /// `peer.username` of a membership event, with its room.
    private func membership(_ event: ServerSentEvent?) -> String {
        let data = json(event?.data ?? "")
        return "\(event?.event ?? "nothing") \((data["peer"] as? [String: Any])?["username"] as? String ?? "") \(data["roomId"] as? String ?? "")"
    }

    @Test func aGrantAllowsTheRoomsItNames() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let token = try await TestTokens.mint(id: "ann-tab-1", rooms: ["lobby", "team-42-*"], secret: Fleet.secret)
            let stream = try await fleet.client(0).connect(token: token)
            #expect(await connectedPeerID(stream) == "ann-tab-1")
            for room in ["lobby", "team-42-call", "team-42-standup"] {
                let joined = try await fleet.client(0).request(.POST, "/\(room)/join", token: token)
                #expect(joined.status == 200, "\(room): \(joined.body)")
            }
            #expect(try await fleet.client(0).request(.POST, "/team-4/join", token: token).status == 403)
            // A renewal keeps the grants.
            let renewed = try #require(json(try await fleet.client(0).request(.POST, "/access", token: token).body)["token"] as? String)
            #expect(try await fleet.client(0).request(.POST, "/team-42-x/join", token: renewed).status == 200)
            #expect(try await fleet.client(0).request(.POST, "/elsewhere/join", token: renewed).status == 403)
            stream.close()
        }
    }

    /// Rotation: nodes run with the new secret and the old one as previous. Tokens signed with
    /// the old one still work; every new token is signed with the new one, which a node that
    /// knows only the old secret refuses.
    @Test func whileASecretRotatesOldTokensWorkAndNewOnesUseTheNewSecret() async throws {
        let old = BadInputTests.previousSecret
        try await Fleet.with(nodes: 1, previousSecret: old) { fleet in
            let oldToken = try await TestTokens.mint(id: "ann-tab-1", secret: old)
            let stream = try await fleet.client(0).connect(token: oldToken)
            #expect(await connectedPeerID(stream) == "ann-tab-1")
            #expect(try await fleet.client(0).request(.POST, "/r/join", token: oldToken).status == 200)
            let fromAccess = try await fleet.client(0).access(username: "bob")
            let renewed = try #require(json(try await fleet.client(0).request(.POST, "/access", token: oldToken).body)["token"] as? String)
            let oldOnly = try await TokenAuthority(secret: old)
            let current = try await TokenAuthority(secret: Fleet.secret)
            for token in [fromAccess, renewed] {
                #expect(await oldOnly.verify(token) == nil)
                #expect(await current.verify(token) != nil)
            }
            stream.close()
        }
    }

    @Test func aResumedSessionKeepsOnlyTheRoomsItsNewTokenGrants() async throws {
        try await Fleet.with(nodes: 2, gracePeriod: .seconds(5)) { fleet in
            let first = try await TestTokens.mint(id: "ann-tab-1", rooms: ["a", "b"], secret: Fleet.secret)
            let ann = try await fleet.client(0).connect(token: first)
            #expect(await connectedPeerID(ann) == "ann-tab-1")
            let bob = try await Participant.connect("bob", fleet: fleet, node: 1)
            for room in ["a", "b"] {
                #expect(try await fleet.client(0).request(.POST, "/\(room)/join", token: first).status == 200)
                #expect(try await fleet.client(1).request(.POST, "/\(room)/join", token: bob.token).status == 200)
            }
            var lastID = ""
            for _ in 0..<2 {
                let event = await nextSignal(ann)
                #expect(event?.event == "add-peer")
                lastID = event?.id ?? lastID
            }
            for _ in 0..<2 { #expect(await nextSignal(bob.stream)?.event == "add-peer") }

            // ann's page comes back with a token for room a only.
            ann.close()
            #expect(try await fleet.eventually { fleet.nodes[0].coordinator.openStreamCount == 0 })
            let narrower = try await TestTokens.mint(id: "ann-tab-1", rooms: ["a"], secret: Fleet.secret)
            let back = try await fleet.client(1).connect(token: narrower, lastEventID: lastID)
            #expect(json(await back.next()?.data ?? "")["resumed"] as? Bool == true)
            #expect(membership(await nextSignal(back)) == "remove-peer bob b")
            #expect(membership(await nextSignal(bob.stream)) == "remove-peer ann b")
            #expect(try await fleet.roomMembers("a") == ["ann-tab-1", bob.id])
            #expect(try await fleet.roomMembers("b") == [bob.id])
            #expect(await nextSignal(back, seconds: 0.5) == nil)
            bob.stream.close()
        }
    }
}
