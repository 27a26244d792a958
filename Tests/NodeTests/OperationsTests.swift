import Foundation
import HTTPServer
import SignalingClient
import Testing

@Suite("Operations: metrics, readiness, status, the demo page")
struct OperationsTests {
    /// The value of one sample line of a Prometheus scrape, e.g. `switchboard_joins_total{result="joined"}`.
    static func sample(_ scrape: String, _ series: String) -> Double? {
        for line in scrape.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    @Test func metricsMoveWithTraffic() async throws {
        // No pings while it counts events (on a loaded machine the test can outlast 10 s).
        let quiet = NodeConfiguration(host: "127.0.0.1", port: 0, pingInterval: .seconds(3600), relayRate: 0, joinRate: 0)
        try await Fleet.with(nodes: 2, configuration: quiet) { fleet in
            let scrape = { (node: Int) in try await fleet.client(node).request(.GET, "/metrics").body }
            let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
            let bob = try await Participant.connect("bob", fleet: fleet, node: 0)
            #expect(Self.sample(try await scrape(0), "switchboard_streams_open") == 2)
            #expect(Self.sample(try await scrape(1), "switchboard_streams_open") == 0)

            // Joins and relays are counted where the request lands (node 1), events where
            // the streams are (node 0).
            _ = try await fleet.client(1).request(.POST, "/m/join", token: ann.token)
            _ = try await fleet.client(1).request(.POST, "/m/join", token: bob.token)
            _ = try await fleet.client(1).request(.POST, "/m/join", token: bob.token)
            _ = try await fleet.client(1).request(.POST, "/relay/\(ann.id)/hello", token: bob.token, body: "{}")
            _ = try await fleet.client(1).request(.POST, "/relay/nobody/hello", token: bob.token, body: "{}")
            #expect(await nextSignal(ann.stream)?.event == "add-peer")
            #expect(await nextSignal(ann.stream)?.event == "hello")
            #expect(await nextSignal(bob.stream)?.event == "add-peer")
            let node1 = try await scrape(1)
            #expect(Self.sample(node1, #"switchboard_joins_total{result="joined"}"#) == 2)
            #expect(Self.sample(node1, #"switchboard_joins_total{result="already_member"}"#) == 1)
            #expect(Self.sample(node1, #"switchboard_relays_total{result="delivered"}"#) == 1)
            #expect(Self.sample(node1, #"switchboard_relays_total{result="noSuchPeer"}"#) == 1)
            // (The second join of bob needs no script: the node finds it a member already.)
            #expect(Self.sample(node1, #"switchboard_script_duration_seconds_count{script="join"}"#) == 2)
            #expect(Self.sample(node1, #"switchboard_script_duration_seconds_count{script="remember-room"}"#) == 2)
            let node0 = try await scrape(0)
            // connected ×2, add-peer ×2, hello ×1
            #expect(Self.sample(node0, "switchboard_events_sent_total") == 5)
            #expect(Self.sample(node0, "switchboard_local_rooms") == 1)
            #expect(Self.sample(node0, "switchboard_local_room_members") == 2)

            bob.stream.close()
            #expect(try await fleet.eventually { Self.sample(try await scrape(0), "switchboard_streams_open") == 1 })
            ann.stream.close()
        }
    }

    @Test func readinessFollowsRedis() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let client = fleet.client(0)
            let ready = try await client.request(.GET, "/readyz")
            #expect(ready.status == 200)
            #expect(json(ready.body) as NSDictionary == ["redis": true, "scripts": true, "subscription": true] as NSDictionary)

            await fleet.redisServer.kill()
            #expect(try await fleet.eventually { try await client.request(.GET, "/readyz").status == 503 })
            #expect(try await client.request(.GET, "/healthz").status == 200)  // alive all the same
            try await fleet.redisServer.restart()
            #expect(try await fleet.eventually { try await client.request(.GET, "/readyz").status == 200 })
            let scrape = try await client.request(.GET, "/metrics").body
            // Both connections came back: the command connection and the subscriber.
            #expect((Self.sample(scrape, "switchboard_redis_reconnects_total") ?? 0) >= 2)
        }
    }

    @Test(arguments: RedisKind.allCases) func statusListsTheFleet(on kind: RedisKind) async throws {
        try await Fleet.with(nodes: 2, on: kind) { fleet in
            // Each node writes its heartbeat record as it starts.
            var status: [String: Any] = [:]
            let listed = try await fleet.eventually {
                status = json(try await fleet.client(0).request(.GET, "/status").body)
                return (status["fleet"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == ["node-0", "node-1"]
            }
            #expect(listed, "\(status)")
            #expect(status["node"] as? String == "node-0")
            #expect(status["ready"] as? Bool == true)
            let page = try await fleet.client(0).request(.GET, "/status", headers: [("Accept", "text/html")])
            #expect(page.headers["Content-Type"].first?.hasPrefix("text/html") == true)
        }
    }

    @Test func theDemoPageIsServed() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let client = fleet.client(0)
            let root = try await client.request(.GET, "/")
            #expect(root.status == 302)
            let location = try #require(root.headers["Location"].first)
            #expect(location.count == 11 && location.hasPrefix("/"))

            let page = try await client.request(.GET, location)
            #expect(page.status == 200)
            #expect(page.headers["Content-Type"].first?.hasPrefix("text/html") == true)
            #expect(page.body.contains("/static/app.js"))
            let script = try await client.request(.GET, "/static/app.js")
            #expect(script.headers["Content-Type"].first?.hasPrefix("text/javascript") == true)
            #expect(script.body.contains("RTCPeerConnection"))
            #expect(try await client.request(.GET, "/static/missing.js").status == 404)
            #expect(try await client.request(.GET, "/bad%7Bname").status == 400)
            // The API's own paths are not rooms.
            #expect(try await client.request(.GET, "/connect").status == 401)
            #expect(try await client.request(.GET, "/healthz").body.contains("\"status\":\"ok\""))
        }
    }
}
