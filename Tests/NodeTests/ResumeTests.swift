import Foundation
import NIOHTTP1
import SignalingClient
import Testing

/// A stream that drops and comes back with `Last-Event-ID`, on any node, within the grace period.
@Suite("Resume with Last-Event-ID")
struct ResumeTests {
    /// `data.n` of a relayed test message, `peer.username` of a membership event.
    private func label(_ event: ServerSentEvent?) -> String {
        guard let event else { return "nothing" }
        let data = json(event.data)
        if let n = (data["data"] as? [String: Any])?["n"] as? Int { return "\(event.event) \(n)" }
        if let peer = (data["peer"] as? [String: Any])?["username"] as? String { return "\(event.event) \(peer)" }
        return event.event
    }

    private func send(_ n: Int, from sender: Participant, to target: Participant, fleet: Fleet) async throws -> Int {
        try await fleet.client(sender.node).request(.POST, "/relay/\(target.id)/note", token: sender.token, body: #"{"n":\#(n)}"#).status
    }

    /// ann (node 0) and bob (node 1) in room `r`, each past the other's add-peer.
    private func pair(_ fleet: Fleet) async throws -> (ann: Participant, bob: Participant) {
        let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
        let bob = try await Participant.connect("bob", fleet: fleet, node: 1)
        _ = try await fleet.client(0).request(.POST, "/r/join", token: ann.token)
        _ = try await fleet.client(1).request(.POST, "/r/join", token: bob.token)
        #expect(label(await nextSignal(ann.stream)) == "add-peer bob")
        #expect(label(await nextSignal(bob.stream)) == "add-peer ann")
        return (ann, bob)
    }

    @Test(arguments: RedisKind.allCases) func aDroppedStreamResumesOnAnotherNodeWithWhatItMissed(on kind: RedisKind) async throws {
        // A grace period no loaded machine outlasts while carol connects and joins: the test is
        // about what a resume brings back, not about the period's end (see the tests below).
        try await Fleet.with(nodes: 2, on: kind, gracePeriod: .seconds(30)) { fleet in
            let (ann, bob) = try await pair(fleet)
            #expect(try await send(1, from: bob, to: ann, fleet: fleet) == 200)
            let seen = await nextSignal(ann.stream)
            #expect(label(seen) == "note 1")
            let lastID = try #require(seen?.id)

            ann.stream.close()
            // While ann is away: relays wait for her (202), and carol joins.
            #expect(try await fleet.eventually { try await fleet.noOneListens(to: ann.id) })
            #expect(try await send(2, from: bob, to: ann, fleet: fleet) == 202)
            #expect(try await send(3, from: bob, to: ann, fleet: fleet) == 202)
            let carol = try await Participant.connect("carol", fleet: fleet, node: 1)
            _ = try await fleet.client(1).request(.POST, "/r/join", token: carol.token)
            #expect(try await send(4, from: carol, to: ann, fleet: fleet) == 202)

            let resumed = try await fleet.client(1).connect(token: ann.token, lastEventID: lastID)
            let connected = await resumed.next()
            #expect(connected?.event == "connected")
            #expect(json(connected?.data ?? "")["resumed"] as? Bool == true)
            #expect(connected?.id == lastID)
            var missed: [String] = []
            for _ in 0..<4 { missed.append(label(await nextSignal(resumed))) }
            // Each log in order (relays from bob, then carol; the room's events); the logs
            // interleaved by the millisecond Redis wrote them.
            #expect(missed.filter { $0.hasPrefix("note") } == ["note 2", "note 3", "note 4"])
            #expect(missed.filter { $0.hasPrefix("add-peer") } == ["add-peer carol"])

            // Live again, and nobody else saw ann go or come back.
            #expect(try await send(5, from: bob, to: ann, fleet: fleet) == 200)
            #expect(label(await nextSignal(resumed)) == "note 5")
            #expect(label(await nextSignal(bob.stream)) == "add-peer carol")
            #expect(label(await nextSignal(bob.stream, seconds: 0.5)) == "nothing")
            #expect(try await fleet.roomMembers("r") == [ann.id, bob.id, carol.id])
            resumed.close()
            carol.stream.close()
        }
    }

    /// A page renews its token before it expires (`POST /access` with the current one), then
    /// opens a new EventSource with the fresh token and the last event id in its URL.
    @Test func aRenewedTokenResumesTheSessionWithTheLastEventIDInTheURL() async throws {
        try await Fleet.with(nodes: 2, gracePeriod: .seconds(5)) { fleet in
            let (ann, bob) = try await pair(fleet)
            #expect(try await send(1, from: bob, to: ann, fleet: fleet) == 200)
            let lastID = try #require(await nextSignal(ann.stream)?.id)

            // Tokens count time in whole seconds: one renewed within the second it was issued is
            // the same token.
            try await Task.sleep(for: .milliseconds(1100))
            let renewal = try await fleet.client(1).request(.POST, "/access", token: ann.token)
            #expect(renewal.status == 200, "\(renewal.body)")
            let fresh = try #require(json(renewal.body)["token"] as? String)
            #expect(fresh != ann.token)
            let stale = try await fleet.client(1).request(.POST, "/access", token: "not.a.token")
            #expect(stale.status == 403 && json(stale.body)["error"] != nil, "\(stale.status) \(stale.body)")

            ann.stream.close()
            #expect(try await fleet.eventually { try await fleet.noOneListens(to: ann.id) })
            #expect(try await send(2, from: bob, to: ann, fleet: fleet) == 202)
            let id = try #require(lastID.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
            let resumed = try await fleet.client(1).connect(token: "\(fresh)&lastEventId=\(id)")
            let connected = await resumed.next()
            #expect((json(connected?.data ?? "")["user"] as? [String: Any])?["id"] as? String == ann.id)
            #expect(json(connected?.data ?? "")["resumed"] as? Bool == true, "\(connected?.data ?? "")")
            #expect(label(await nextSignal(resumed)) == "note 2")
            // The fresh token acts for the same peer.
            #expect(try await fleet.client(0).request(.POST, "/relay/\(bob.id)/note", token: fresh, body: #"{"n":3}"#).status == 200)
            #expect(label(await nextSignal(bob.stream)) == "note 3")
            resumed.close()
            bob.stream.close()
        }
    }

    @Test func takingOverALiveStreamDeliversEachEventOnce() async throws {
        try await Fleet.with(nodes: 2, gracePeriod: .seconds(5)) { fleet in
            let (ann, bob) = try await pair(fleet)
            #expect(try await send(1, from: bob, to: ann, fleet: fleet) == 200)
            let seen = await nextSignal(ann.stream)
            let lastID = try #require(seen?.id)
            // The old stream gets note 2 as well, but the client never read it: it comes again.
            #expect(try await send(2, from: bob, to: ann, fleet: fleet) == 200)

            let second = try await fleet.client(1).connect(token: ann.token, lastEventID: lastID)
            #expect(json(await second.next()?.data ?? "")["resumed"] as? Bool == true)
            #expect(label(await nextSignal(second)) == "note 2")
            #expect(try await send(3, from: bob, to: ann, fleet: fleet) == 200)
            #expect(label(await nextSignal(second)) == "note 3")
            #expect(label(await nextSignal(second, seconds: 0.5)) == "nothing")
            // The first stream ends with `replaced`.
            var first: [String] = []
            while let event = await ann.stream.nextSignal() { first.append(event.event) }
            #expect(first.last == "replaced")

            // Resuming again from the same point gives the same events, once each.
            let third = try await fleet.client(0).connect(token: ann.token, lastEventID: lastID)
            #expect(json(await third.next()?.data ?? "")["resumed"] as? Bool == true)
            #expect(label(await nextSignal(third)) == "note 2")
            #expect(label(await nextSignal(third)) == "note 3")
            #expect(label(await nextSignal(third, seconds: 0.5)) == "nothing")
            #expect(label(await nextSignal(bob.stream, seconds: 0.2)) == "nothing")
            third.close()
        }
    }

    @Test func aPeerThatDoesNotComeBackLeavesWhenTheGracePeriodEnds() async throws {
        try await Fleet.with(nodes: 2, gracePeriod: .seconds(1)) { fleet in
            let (ann, bob) = try await pair(fleet)
            let dropped = ContinuousClock.now
            ann.stream.close()
            let removal = await nextSignal(bob.stream, seconds: 10)
            let waited = ContinuousClock.now - dropped
            #expect(label(removal) == "remove-peer ann")
            #expect(waited >= .seconds(1))
            #expect(try await fleet.roomMembers("r") == [bob.id])
            // Too late: a fresh session, in no room.
            let late = try await fleet.client(0).connect(token: ann.token, lastEventID: "2;0-0-0")
            let connected = await late.next()
            #expect(connected?.event == "connected")
            #expect(json(connected?.data ?? "")["resumed"] == nil)
            #expect(try await fleet.client(0).request(.POST, "/relay/\(ann.id)/note", token: bob.token, body: "{}").status == 403)
            late.close()
        }
    }

    @Test func withNoGracePeriodADroppedPeerLeavesAtOnce() async throws {
        try await Fleet.with(nodes: 2, gracePeriod: .zero) { fleet in
            let (ann, bob) = try await pair(fleet)
            ann.stream.close()
            #expect(label(await nextSignal(bob.stream, seconds: 2)) == "remove-peer ann")
        }
    }

    @Test func aStreamThatMissedMoreThanTheLogKeepsStartsAfresh() async throws {
        try await Fleet.with(nodes: 2, gracePeriod: .seconds(30)) { fleet in
            let (ann, bob) = try await pair(fleet)
            #expect(try await send(0, from: bob, to: ann, fleet: fleet) == 200)
            let lastID = try #require(await nextSignal(ann.stream)?.id)
            ann.stream.close()
            #expect(try await fleet.eventually { try await fleet.noOneListens(to: ann.id) })
            #expect(try await send(1, from: bob, to: ann, fleet: fleet) == 202)
            // More than the log keeps (1,000 entries, trimmed in blocks of 100), over one connection.
            let connection = try await PersistentConnection.connect(port: fleet.nodes[1].port)
            for n in 2...1200 {
                _ = try await connection.request(.POST, "/relay/\(ann.id)/note", token: bob.token, body: #"{"n":\#(n)}"#)
            }
            await connection.close()

            let back = try await fleet.client(0).connect(token: ann.token, lastEventID: lastID)
            #expect(json(await back.next()?.data ?? "")["resumed"] == nil)
            // Its session ended as if it had gone: bob saw it leave, and it is in no room.
            #expect(label(await nextSignal(bob.stream)) == "remove-peer ann")
            #expect(try await fleet.roomMembers("r") == [bob.id])
            #expect(label(await nextSignal(back, seconds: 0.5)) == "nothing")
        }
    }

    @Test func eventIDsAreCursorsOverTheLogs() async throws {
        try await Fleet.with(nodes: 1, gracePeriod: .seconds(5)) { fleet in
            let (ann, bob) = try await pair(fleet)
            _ = try await send(1, from: bob, to: ann, fleet: fleet)
            let id = try #require(await nextSignal(ann.stream)?.id)
            // `2;<own log position>;r=<room log entry>`: the format, `<entry id>-<events delivered>`, `<entry id>`
            let parts = id.split(separator: ";")
            #expect(parts.count == 3)
            #expect(parts[0] == "2")
            #expect(parts[1].split(separator: "-").count == 3)
            #expect(parts[2].hasPrefix("r=") && parts[2].split(separator: "-").count == 2)
            ann.stream.close()
            bob.stream.close()
        }
    }

    /// The figure for the README: a receiver that drops its stream every few events, while a
    /// sender keeps relaying, reconnecting each time to the other node with Last-Event-ID.
    @Test func manyDropsLoseNothingAndRepeatNothing() async throws {
        try await Fleet.with(nodes: 2, gracePeriod: .seconds(10)) { fleet in
            let (ann, bob) = try await pair(fleet)
            ann.stream.close()
            let total = 2000
            let sender = Task {
                let connection = try await PersistentConnection.connect(port: fleet.nodes[1].port)
                var held = 0
                for n in 1...total {
                    let status = try await connection.request(.POST, "/relay/\(ann.id)/note", token: bob.token, body: "\(n)").status
                    #expect(status == 200 || status == 202, "relay \(n): \(status)")
                    if status == 202 { held += 1 }
                }
                await connection.close()
                return held
            }
            var received: [Int] = []
            var lastID: String?
            var drops = 0
            var node = 0
            // Ends once nothing new arrived for 30 s, even if something was lost: the counts
            // below say what. (Not after a fixed time: on a loaded machine the sender alone can
            // take minutes, and a receiver that gave up would let the peer's session expire.)
            var lastProgress = ContinuousClock.now
            while received.count < total, ContinuousClock.now - lastProgress < .seconds(30) {
                let stream = try await fleet.client(node).connect(token: ann.token, lastEventID: lastID ?? "2;0-0-0")
                let readThisTime = Int.random(in: 1...40)
                var read = 0
                while read < readThisTime, received.count < total, let event = await nextSignal(stream) {
                    if let id = event.id { lastID = id }
                    if event.event == "note", let n = Int((json(event.data)["data"] as? Int).map(String.init) ?? "") {
                        received.append(n)
                        read += 1
                        lastProgress = .now
                    }
                }
                stream.close()
                drops += 1
                node = 1 - node
            }
            let held = try await sender.value
            var replayed = 0
            for node in fleet.nodes {
                let text = try await SignalingClient(port: node.port).request(.GET, "/metrics").body
                let line = text.split(separator: "\n").first { $0.hasPrefix("switchboard_events_replayed_total") }
                replayed += Int(line?.split(separator: " ").last ?? "0") ?? 0
            }
            let lost = Set(1...total).subtracting(received).count
            let repeated = received.count - Set(received).count
            print("resume: \(drops) drops, \(total) relays sent (\(held) answered 202 while no stream was open), \(received.count) received, \(lost) lost, \(repeated) repeated, in order: \(received == received.sorted()), \(replayed) replayed from the logs")
            #expect(received == Array(1...total))
            #expect(label(await nextSignal(bob.stream, seconds: 0.2)) == "nothing")  // bob saw no churn
        }
    }
}
