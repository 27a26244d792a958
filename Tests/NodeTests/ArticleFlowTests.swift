import Foundation
import HTTPServer
import NIOHTTP1
import SignalingClient
import Testing

@Suite("Two nodes, one Redis, real HTTP")
struct ArticleFlowTests {
    @Test(arguments: RedisKind.allCases) func theArticleFlowAcrossTwoNodes(on kind: RedisKind) async throws {
        try await Fleet.with(nodes: 2, on: kind) { fleet in
            let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
            let bob = try await Participant.connect("bob", fleet: fleet, node: 1)

            // No sticky sessions: each joins through the node that does *not* hold its stream.
            #expect(try await fleet.client(1).request(.POST, "/demo/join", token: ann.token).status == 200)
            #expect(try await fleet.client(0).request(.POST, "/demo/join", token: bob.token).status == 200)

            let annSees = await nextSignal(ann.stream)
            #expect(annSees?.event == "add-peer")
            let annData = json(annSees?.data ?? "")
            #expect((annData["peer"] as? [String: Any])?["id"] as? String == bob.id)
            #expect((annData["peer"] as? [String: Any])?["username"] as? String == "bob")
            #expect(annData["roomId"] as? String == "demo")
            #expect(annData["offer"] as? Bool == false)

            let bobSees = await nextSignal(bob.stream)
            #expect(bobSees?.event == "add-peer")
            let bobData = json(bobSees?.data ?? "")
            #expect((bobData["peer"] as? [String: Any])?["id"] as? String == ann.id)
            #expect(bobData["offer"] as? Bool == true)  // the joiner offers

            // bob offers, ann answers, both trickle ICE — each relayed through the other node.
            let offer = #"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}"#
            let sent = try await fleet.client(1).request(.POST, "/relay/\(ann.id)/session-description", token: bob.token, body: offer)
            #expect(sent.status == 200)
            let annGets = await nextSignal(ann.stream)
            #expect(annGets?.event == "session-description")
            let relayed = json(annGets?.data ?? "")
            #expect((relayed["peer"] as? [String: Any])?["id"] as? String == bob.id)
            #expect((relayed["data"] as? [String: Any])?["sdp"] as? String == "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n")

            let answer = #"{"type":"answer","sdp":"v=0\r\n"}"#
            #expect(try await fleet.client(0).request(.POST, "/relay/\(bob.id)/session-description", token: ann.token, body: answer).status == 200)
            #expect(await nextSignal(bob.stream)?.event == "session-description")
            for i in 0..<3 {
                let candidate = #"{"candidate":"candidate:\#(i) 1 udp 2122260223 127.0.0.1 5000\#(i) typ host"}"#
                #expect(try await fleet.client(0).request(.POST, "/relay/\(bob.id)/ice-candidate", token: ann.token, body: candidate).status == 200)
                #expect(try await fleet.client(1).request(.POST, "/relay/\(ann.id)/ice-candidate", token: bob.token, body: candidate).status == 200)
            }
            for i in 0..<3 {
                // In order, per sender and receiver.
                for stream in [ann.stream, bob.stream] {
                    let event = await nextSignal(stream)
                    #expect(event?.event == "ice-candidate")
                    let candidate = (json(event?.data ?? "")["data"] as? [String: Any])?["candidate"] as? String
                    #expect(candidate?.hasPrefix("candidate:\(i) ") == true)
                }
            }

            // bob goes away: ann is told, and Redis holds only ann.
            bob.stream.close()
            let gone = await nextSignal(ann.stream)
            #expect(gone?.event == "remove-peer")
            #expect((json(gone?.data ?? "")["peer"] as? [String: Any])?["id"] as? String == bob.id)
            #expect(json(gone?.data ?? "")["roomId"] as? String == "demo")
            #expect(try await fleet.roomMembers("demo") == [ann.id])
            #expect(try await fleet.keys(matching: "*\(bob.id)*") == [])

            // A relay to bob now fails loudly.
            let late = try await fleet.client(0).request(.POST, "/relay/\(bob.id)/ice-candidate", token: ann.token, body: "{}")
            #expect(late.status == 404)
            ann.stream.close()
            #expect(try await fleet.eventually { try await fleet.signalingKeys() == [] })
            // Every publish was sharded: none was copied to every node of a cluster.
            #expect(try await fleet.classicPublishesOnTheBus() == 0)
        }
    }

    @Test func everyEventHasAnIdAndPingsFlow() async throws {
        try await Fleet.with(nodes: 1, configuration: NodeConfiguration(host: "127.0.0.1", port: 0, pingInterval: .milliseconds(100))) { fleet in
            let client = fleet.client(0)
            let token = try await client.access(username: "ann")
            let stream = try await client.connect(token: token, useQueryToken: false)
            var ids: [String?] = []
            var names: [String] = []
            var retry: Int?
            for _ in 0..<3 {
                guard let event = await stream.next() else { break }
                ids.append(event.id)
                names.append(event.event)
                retry = retry ?? event.retry
            }
            #expect(names == ["connected", "ping", "ping"])
            // Nothing routed yet: every id is the empty cursor (before the own log's first entry).
            #expect(ids == ["2;0-0-0", "2;0-0-0", "2;0-0-0"])
            // Browsers come back after about a second, not the default three; the jitter keeps
            // a fleet's browsers from coming back all at once.
            #expect((800...1200).contains(retry ?? 0), "retry: \(String(describing: retry))")
            stream.close()
        }
    }

    @Test func leaveTellsBothSides() async throws {
        try await Fleet.with(nodes: 2) { fleet in
            let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
            let bob = try await Participant.connect("bob", fleet: fleet, node: 1)
            _ = try await fleet.client(0).request(.POST, "/r/join", token: ann.token)
            _ = try await fleet.client(0).request(.POST, "/r/join", token: bob.token)
            #expect(await nextSignal(ann.stream)?.event == "add-peer")
            #expect(await nextSignal(bob.stream)?.event == "add-peer")
            let left = try await fleet.client(1).request(.POST, "/r/leave", token: bob.token)
            #expect(left.status == 200)
            #expect(await nextSignal(ann.stream)?.event == "remove-peer")
            #expect(await nextSignal(bob.stream)?.event == "remove-peer")
            #expect(try await fleet.client(1).request(.POST, "/r/leave", token: bob.token).status == 404)
            #expect(try await fleet.roomMembers("r") == [ann.id])
            ann.stream.close()
            bob.stream.close()
        }
    }

    @Test func authAndInputErrors() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let client = fleet.client(0)
            let token = try await client.access(username: "ann")
            let stream = try await client.connect(token: token)

            #expect(try await client.request(.POST, "/r/join").status == 401)
            #expect(try await client.request(.POST, "/r/join", token: "not.a.token").status == 403)
            #expect(try await client.request(.GET, "/connect?token=\(token)").status == 406)
            let bad = try await client.request(.POST, "/bad%7Broom%7D/join", token: token)
            #expect(bad.status == 400)
            #expect(json(bad.body)["error"] != nil)
            #expect(try await client.request(.POST, "/relay/nobody/ice-candidate", token: token, body: "{}").status == 404)
            #expect(try await client.request(.POST, "/relay/\(UUID())/ev%0Aent", token: token, body: "{}").status == 400)
            #expect(try await client.request(.POST, "/relay/x/ice-candidate", token: token, body: "{not json").status == 400)
            #expect(try await client.request(.POST, "/access", body: #"{"name":"x"}"#).status == 400)

            // A token whose stream is not open cannot join.
            let other = try await client.access(username: "bob")
            #expect(try await client.request(.POST, "/r/join", token: other).status == 409)
            #expect(try await fleet.keys(matching: "sb:room:*") == [])

            // A stranger cannot message a peer by id: no shared room, 403, nothing delivered.
            let carol = try await Participant.connect("carol", fleet: fleet, node: 0)
            let refused = try await client.request(.POST, "/relay/\(carol.id)/ice-candidate", token: token, body: "{}")
            #expect(refused.status == 403)
            #expect(json(refused.body)["error"] != nil)
            #expect(await nextSignal(carol.stream, seconds: 0.5) == nil)

            // Preflight for a cross-origin POST carrying Authorization.
            let preflight = try await client.request(.OPTIONS, "/r/join", headers: [
                ("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization"),
            ])
            #expect(preflight.status == 204)
            #expect(preflight.headers["Access-Control-Allow-Origin"].first == "*")
            #expect(preflight.headers["Access-Control-Allow-Headers"].first?.lowercased().contains("authorization") == true)
            stream.close()
        }
    }
}
