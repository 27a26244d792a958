import Coordinator
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Prometheus
import RedisClient
import RedisServer
import SignalingClient
import Testing

/// Redis restarts, loses its data, or silently drops a node's subscriptions: the nodes put
/// things back as they were, without clients doing anything and without churn.
@Suite("Redis restarts and lost subscriptions")
struct RedisRestartTests {
    @Test func roomsComeBackAsTheyWereAfterRedisLosesItsData() async throws {
        // The default heartbeat (3 s): the recovery time printed below is the one to expect.
        try await Fleet.with(nodes: 2) { fleet in
            let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
            let bob = try await Participant.connect("bob", fleet: fleet, node: 1)
            let carol = try await Participant.connect("carol", fleet: fleet, node: 1)
            let dave = try await Participant.connect("dave", fleet: fleet, node: 0)
            for peer in [ann, bob, carol, dave] { _ = try await fleet.client(0).request(.POST, "/r/join", token: peer.token) }
            _ = try await fleet.client(0).request(.POST, "/alone/join", token: ann.token)  // a room with no events
            for peer in [ann, bob, carol, dave] {
                for _ in 0..<3 { #expect(await nextSignal(peer.stream)?.event == "add-peer") }
            }

            // Redis restarts with nothing (no persistence). carol goes away while it is down,
            // dave just after it is back, before the nodes have noticed the loss.
            await fleet.redisServer.kill()
            carol.stream.close()
            try await fleet.redisServer.restart()
            let restarted = ContinuousClock.now
            dave.stream.close()

            // The rooms come back as they were, relays work with no client action, and then
            // (after every node has put back what it holds) the departures are cleaned up.
            #expect(try await fleet.eventually { try await fleet.roomMembers("r").isSuperset(of: [ann.id, bob.id]) })
            let roomsBack = ContinuousClock.now - restarted
            #expect(try await fleet.roomMembers("alone") == [ann.id])
            #expect(try await fleet.eventually {
                try await fleet.client(1).request(.POST, "/relay/\(ann.id)/note", token: bob.token, body: "{}").status == 200
            })
            let relaysBack = ContinuousClock.now - restarted
            #expect(try await fleet.client(0).request(.POST, "/relay/\(bob.id)/note", token: ann.token, body: "{}").status == 200)
            let cleaned = try await fleet.eventually(seconds: 15) { try await fleet.roomMembers("r") == [ann.id, bob.id] }
            let (members, keys) = (try await fleet.roomMembers("r"), try await fleet.keys())
            #expect(cleaned, "members: \(members.map { [ann.id: "ann", bob.id: "bob", carol.id: "carol", dave.id: "dave"][$0] ?? $0 }), keys: \(keys)")
            let cleanedUp = ContinuousClock.now - restarted
            print("Redis restart with its data lost (heartbeat 3 s): rooms back after \(roomsBack), relays work after \(relaysBack), departures during the outage cleaned up after \(cleanedUp)")
            // Each sees what it is sent (a relay answered 202 while its subscription was not
            // back yet arrives too) and that carol and dave left, never add-peer churn.
            for stream in [ann.stream, bob.stream] {
                var seen: [String] = []
                while !(seen.contains("remove-peer carol") && seen.contains("remove-peer dave")), seen.count < 10 {
                    guard let event = await nextSignal(stream) else { break }
                    let who = ((json(event.data)["peer"] as? [String: Any])?["username"] as? String) ?? ""
                    seen.append(event.event == "remove-peer" ? "remove-peer \(who)" : event.event)
                }
                #expect(Set(seen) == ["note", "remove-peer carol", "remove-peer dave"], "\(seen)")
            }
            ann.stream.close()
            bob.stream.close()
        }
    }

    @Test func whileRedisIsDownTheAPIAnswers503AndStreamsStayOpen() async throws {
        try await Fleet.with(nodes: 2) { fleet in
            let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
            let bob = try await Participant.connect("bob", fleet: fleet, node: 1)
            for peer in [ann, bob] { _ = try await fleet.client(peer.node).request(.POST, "/r/join", token: peer.token) }
            for peer in [ann, bob] { #expect(await nextSignal(peer.stream)?.event == "add-peer") }

            await fleet.redisServer.kill()
            // Relays answer at once: 503, Retry-After, a JSON error. Joins and leaves first wait
            // a few seconds for Redis to come back (`membershipWait`), then answer the same.
            let calls: [(node: Int, path: String, token: String, waits: Bool)] = [
                (0, "/other/join", ann.token, true), (0, "/r/leave", ann.token, true), (1, "/relay/\(ann.id)/note", bob.token, false),
                (0, "/relay/\(bob.id)/note", ann.token, false),
            ]
            let wait = fleet.nodes[0].coordinator.membershipWait
            await withDiscardingTaskGroup { group in
                for call in calls {
                    group.addTask {
                        let started = ContinuousClock.now
                        guard let reply = try? await fleet.client(call.node).request(.POST, call.path, token: call.token, body: "{}") else {
                            Issue.record("\(call.path): no answer")
                            return
                        }
                        let waited = ContinuousClock.now - started
                        #expect(reply.status == 503, "\(call.path): \(reply.status) \(reply.body)")
                        #expect(Int(reply.headers["Retry-After"].first ?? "") ?? 0 >= 1, "\(call.path)")
                        #expect((json(reply.body)["error"] as? [String: Any])?["message"] != nil, "\(call.path): \(reply.body)")
                        if call.waits {
                            #expect(waited >= wait - .seconds(1) && waited < wait + .seconds(3), "\(call.path) waited \(waited)")
                        } else {
                            #expect(waited < .seconds(3), "\(call.path) waited \(waited)")
                        }
                    }
                }
            }
            // A new stream is not refused (an EventSource would give up for good): it is held
            // open, with no event yet.
            let carol = try await fleet.client(1).access(username: "carol")  // tokens need no Redis
            let held = BrowserEventSource(client: fleet.client(1), path: "/connect?token=\(carol)")
            #expect(try await fleet.client(0).request(.GET, "/healthz").status == 200)

            // Back (empty): the held stream starts (it was never dropped), and the streams that
            // stayed open carry relays again, both ways, with no client action; nobody saw churn.
            await withDiscardingTaskGroup { group in
                group.addTask { await held.run() }
                var seen: [BrowserEventSource.Occurrence] = []
                for await occurrence in held.occurrences {
                    seen.append(occurrence)
                    if seen.count == 1 {
                        // Open, and nothing else for a while: it waits for Redis.
                        try? await Task.sleep(for: .seconds(1))
                        try? await fleet.redisServer.restart()
                    }
                    if case .message = occurrence { break }
                }
                #expect(seen.count == 2 && seen.first == .open, "\(seen)")
                if case .message(let event) = seen.last { #expect(event.event == "connected") }
                group.cancelAll()
            }
            #expect(try await fleet.eventually(seconds: 15) {
                try await fleet.client(1).request(.POST, "/relay/\(ann.id)/note", token: bob.token, body: "{}").status == 200
            })
            // Each node's command connection comes back after its own back-off (up to 2 s).
            let last = NIOLockedValueBox("")
            #expect(try await fleet.eventually(seconds: 5) {
                let reply = try await fleet.client(0).request(.POST, "/relay/\(bob.id)/note", token: ann.token, body: "{}")
                last.withLockedValue { $0 = "\(reply.status) \(reply.body)" }
                return reply.status == 200
            }, "ann → bob: \(last.withLockedValue { $0 })")
            #expect(await nextSignal(ann.stream)?.event == "note")
            #expect(await nextSignal(bob.stream)?.event == "note")
            ann.stream.close()
            bob.stream.close()
        }
    }

    @Test func aSubscriptionLostBehindALiveConnectionIsNoticedAndRenewed() async throws {
        try await RedisServerProcess.with(tcpPort: try RedisServerProcess.freePort()) { server in
            let proxy = try await SwitchingProxy.start(upstreamPort: server.tcpPort!)
            defer { proxy.stop() }
            // A long command time-out: a loaded machine can hold a reply for seconds, and this
            // test is about a subscription lost behind a live connection, not about time-outs.
            let redis = RedisClient(endpoint: try RedisEndpoint(url: "redis://127.0.0.1:\(proxy.port)"), commandTimeout: .seconds(60))
            let registry = PrometheusCollectorRegistry()
            let coordinator = Coordinator(
                redis: redis, keys: try KeySpace(), nodeID: "n", heartbeatInterval: .seconds(1), gracePeriod: .zero,
                metrics: NodeMetrics(factory: PrometheusMetricsFactory(registry: registry)))
            func probesFailed() -> Double {
                OperationsTests.sample(registry.emitToString(), "switchboard_subscription_probes_failed_total") ?? 0
            }
            let running = Task { try await coordinator.run() }
            defer { running.cancel() }
            await coordinator.subscriber.waitUntilConnected()
            let ann = PeerUser(id: PeerID("ann")!, username: "ann")
            let bob = PeerUser(id: PeerID("bob")!, username: "bob")
            let annStream = try await coordinator.openStream(for: ann)
            _ = try await coordinator.openStream(for: bob)
            _ = try await coordinator.join(ann, room: RoomID("r")!)
            _ = try await coordinator.join(bob, room: RoomID("r")!)
            var sent = 0
            func note() async throws -> Coordinator.RelayOutcome {
                sent += 1
                return try await coordinator.relay(from: bob, to: ann.id, event: EventName("note")!, body: "\(sent)")
            }
            #expect(try await note() == .delivered)

            // A failover behind a proxy: the node's connections stay open, its subscriptions are
            // gone. Relays are held (Redis sees no subscriber) until the probe, which runs each
            // heartbeat, notices; then they are delivered again. (How many are held depends on
            // how soon the first is sent: on a loaded machine the probe may come first.)
            #expect(probesFailed() == 0)
            try await proxy.switchUpstreams()
            var outcomes: [Coordinator.RelayOutcome] = []
            #expect(try await eventually {
                outcomes.append(try await note())
                return probesFailed() > 0
            }, "the probe never noticed; relays: \(Set(outcomes.map { "\($0)" }))")
            #expect(try await eventually { try await note() == .delivered })
            // Every note exactly once and in order: those sent meanwhile came from the log.
            // Read for up to 10 s: a missing note fails the test instead of stalling the run.
            let total = sent
            let received = await withTaskGroup(of: [Int]?.self) { reading in
                reading.addTask {
                    var received: [Int] = []
                    while received.count < total, let batch = await annStream.nextBatch() {
                        for event in batch where event.name == "note" {
                            received.append(Int((json(String(buffer: event.data))["data"] as? Int) ?? -1))
                        }
                    }
                    return received
                }
                reading.addTask { try? await Task.sleep(for: .seconds(10)); return nil }
                defer { reading.cancelAll() }
                return await reading.next() ?? nil
            }
            #expect(received == Array(1...sent), "received \(String(describing: received)) of \(sent) within 10 s")
            #expect(sent >= 3)
            await redis.close()
        }
    }

    private func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
        for _ in 0..<1000 {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(5))
        }
        return false
    }
}
