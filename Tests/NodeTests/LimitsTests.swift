import Coordinator
import Foundation
import HTTPServer
import SignalingClient
import Testing

@Suite("Limits: room size, rooms per peer, rates")
struct LimitsTests {
    @Test func aFullRoomRefusesAndTellsNobody() async throws {
        try await Fleet.with(nodes: 1, limits: .init(maxRoomSize: 2, maxRoomsPerPeer: 16)) { fleet in
            let client = fleet.client(0)
            let peers = [
                try await Participant.connect("a", fleet: fleet, node: 0), try await Participant.connect("b", fleet: fleet, node: 0),
                try await Participant.connect("c", fleet: fleet, node: 0),
            ]
            #expect(try await client.request(.POST, "/full/join", token: peers[0].token).status == 200)
            #expect(try await client.request(.POST, "/full/join", token: peers[1].token).status == 200)
            let refused = try await client.request(.POST, "/full/join", token: peers[2].token)
            #expect(refused.status == 409)
            #expect((json(refused.body)["error"] as? [String: Any])?["message"] as? String == "the room is full")
            #expect(try await fleet.roomMembers("full") == [peers[0].id, peers[1].id])
            #expect(try await fleet.keys(matching: "sb:peer:{\(peers[2].id)}:rooms") == [])
            // The members heard about each other and nothing about c.
            #expect(await nextSignal(peers[0].stream)?.event == "add-peer")
            #expect(await nextSignal(peers[0].stream, seconds: 0.3) == nil)
            let scrape = try await client.request(.GET, "/metrics").body
            #expect(OperationsTests.sample(scrape, #"switchboard_refused_total{limit="room_full"}"#) == 1)
        }
    }

    @Test func aPeerInTooManyRoomsIsRefused() async throws {
        try await Fleet.with(nodes: 1, limits: .init(maxRoomSize: 100, maxRoomsPerPeer: 2)) { fleet in
            let client = fleet.client(0)
            let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
            #expect(try await client.request(.POST, "/one/join", token: ann.token).status == 200)
            #expect(try await client.request(.POST, "/two/join", token: ann.token).status == 200)
            #expect(try await client.request(.POST, "/two/join", token: ann.token).status == 200)  // already in: fine
            let refused = try await client.request(.POST, "/three/join", token: ann.token)
            #expect(refused.status == 409)
            #expect(try await fleet.keys(matching: "sb:room:{three}*") == [])
            #expect(try await client.request(.POST, "/one/leave", token: ann.token).status == 200)
            #expect(try await client.request(.POST, "/three/join", token: ann.token).status == 200)
        }
    }

    @Test func ratesAreLimitedPerPeerWithRetryAfter() async throws {
        // Buckets that refill one token per 100 s: nothing refills while the test runs, however
        // slow the machine.
        let configuration = NodeConfiguration(host: "127.0.0.1", port: 0, relayRate: 0.01, relayBurst: 3, joinRate: 0.01, joinBurst: 2)
        try await Fleet.with(nodes: 1, configuration: configuration) { fleet in
            let client = fleet.client(0)
            let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
            let bob = try await Participant.connect("bob", fleet: fleet, node: 0)
            #expect(try await client.request(.POST, "/r1/join", token: ann.token).status == 200)
            #expect(try await client.request(.POST, "/r1/join", token: bob.token).status == 200)  // bob's own bucket
            #expect(try await client.request(.POST, "/r2/join", token: ann.token).status == 200)
            let limited = try await client.request(.POST, "/r3/join", token: ann.token)
            #expect(limited.status == 429)
            // A token takes 100 s; what refilled since ann's first join (a second or so on a
            // busy machine) takes a little off.
            let retryAfter = Int(limited.headers["Retry-After"].first ?? "") ?? 0
            #expect((90...100).contains(retryAfter), "Retry-After: \(retryAfter)")
            #expect(try await fleet.keys(matching: "sb:room:{r3}*") == [])

            var statuses: [Int] = []
            for _ in 0..<4 { statuses.append(try await client.request(.POST, "/relay/\(bob.id)/x", token: ann.token, body: "{}").status) }
            #expect(statuses == [200, 200, 200, 429])
            let scrape = try await client.request(.GET, "/metrics").body
            #expect(OperationsTests.sample(scrape, #"switchboard_refused_total{limit="relay_rate"}"#) == 1)
            #expect(OperationsTests.sample(scrape, #"switchboard_refused_total{limit="join_rate"}"#) == 1)
        }
    }

    @Test func oversizedBodiesAreRefused() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let client = fleet.client(0)
            let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
            let bob = try await Participant.connect("bob", fleet: fleet, node: 0)
            _ = try await client.request(.POST, "/r/join", token: ann.token)
            _ = try await client.request(.POST, "/r/join", token: bob.token)
            let big = #"{"sdp":""# + String(repeating: "x", count: 64 * 1024) + #""}"#
            #expect(try await client.request(.POST, "/relay/\(bob.id)/offer", token: ann.token, body: big).status == 413)
            let tooLongEvent = String(repeating: "e", count: 65)
            #expect(try await client.request(.POST, "/relay/\(bob.id)/\(tooLongEvent)", token: ann.token, body: "{}").status == 400)
        }
    }
}
