import Foundation
import SignalingClient
import Testing

/// A browser never gives up: a page written as the original article's client (one EventSource,
/// one join on `connected`) that opens while Redis is down, or just after Redis lost its data,
/// ends up connected, in the room with the others, and relaying.
@Suite("A browser never gives up")
struct BrowserOutageTests {
    /// A short heartbeat keeps the recovery window (1.5 heartbeats) short.
    static let heartbeat = Duration.seconds(1)

    /// ann on node 0 and, if given, carol on node 1, both in room `r`.
    private func members(_ fleet: Fleet, carol withCarol: Bool) async throws -> [Participant] {
        var members = [try await Participant.connect("ann", fleet: fleet, node: 0)]
        if withCarol { members.append(try await Participant.connect("carol", fleet: fleet, node: 1)) }
        for member in members { #expect(try await fleet.client(member.node).request(.POST, "/r/join", token: member.token).status == 200) }
        if withCarol { for member in members { #expect(await nextSignal(member.stream)?.event == "add-peer") } }
        return members
    }

    /// The page's stream is on node 1 and its join goes to node 0. Once it is in, everyone has
    /// been introduced to everyone once, and relays flow both ways.
    private func expectInTheRoom(_ page: ArticleClient, with members: [Participant], fleet: Fleet) async throws {
        let ids = Set(members.map(\.id))
        let joined = try await fleet.eventually(seconds: 30) { page.view.peers == ids && page.view.joins == [200] }
        #expect(joined, "the page: \(page.view)")
        #expect(page.view.failedWith == nil)
        let bob = try #require(page.view.id)
        for member in members {
            let added = await nextSignal(member.stream)
            #expect(added?.event == "add-peer", "\(member.name): \(String(describing: added))")
            #expect((json(added?.data ?? "")["peer"] as? [String: Any])?["id"] as? String == bob)
            let relay = try await fleet.client(member.node).request(.POST, "/relay/\(bob)/note", token: member.token, body: #"{"from":"\#(member.name)"}"#)
            #expect(relay.status == 200, "\(relay.body)")
            let back = try await fleet.client(0).request(.POST, "/relay/\(member.id)/note", token: page.token, body: #"{"from":"bob"}"#)
            #expect(back.status == 200, "\(back.body)")
            #expect(await nextSignal(member.stream)?.event == "note")
        }
        #expect(try await fleet.eventually { page.view.events.filter { $0.hasPrefix("note ") }.count == members.count })
        #expect(page.view.opens == 1, "the held stream was never dropped: \(page.view.opens) opens")
    }

    @Test func aPageOpenedWhileRedisIsDownEndsUpInTheRoom() async throws {
        try await Fleet.with(nodes: 2, heartbeatInterval: Self.heartbeat) { fleet in
            let members = try await members(fleet, carol: false)
            await fleet.redisServer.kill()
            let token = try await fleet.client(1).access(username: "bob")  // tokens need no Redis
            let page = ArticleClient(token: token, streamNode: fleet.client(1), joinNode: fleet.client(0), room: "r")
            await withDiscardingTaskGroup { group in
                group.addTask { await page.run() }
                // The EventSource is open (200 text/event-stream) and waits; nothing fails.
                let held = try? await fleet.eventually { page.view.opens == 1 }
                #expect(held == true)
                try? await Task.sleep(for: .seconds(2))
                #expect(page.view.failedWith == nil && page.view.events.isEmpty, "\(page.view)")

                try? await fleet.redisServer.restart()
                await #expect(throws: Never.self) { try await expectInTheRoom(page, with: members, fleet: fleet) }
                group.cancelAll()
            }
        }
    }

    @Test func aPageOpenedJustAfterRedisLostItsDataEndsUpInTheRoom() async throws {
        try await Fleet.with(nodes: 2, heartbeatInterval: Self.heartbeat) { fleet in
            let members = try await members(fleet, carol: true)
            // Redis comes back empty; the page opens before any node has noticed, and joins
            // through the other node while the nodes put back what they hold.
            try await fleet.redisServer.restart()
            let token = try await fleet.client(1).access(username: "bob")
            let page = ArticleClient(token: token, streamNode: fleet.client(1), joinNode: fleet.client(0), room: "r")
            await withDiscardingTaskGroup { group in
                group.addTask { await page.run() }
                await #expect(throws: Never.self) { try await expectInTheRoom(page, with: members, fleet: fleet) }
                // ann and carol saw no churn: the next thing each gets is a marker sent now.
                for member in members {
                    _ = try? await fleet.client(0).request(.POST, "/relay/\(member.id)/marker", token: page.token, body: "{}")
                    let next = await nextSignal(member.stream)
                    #expect(next?.event == "marker", "\(member.name) got \(String(describing: next))")
                }
                group.cancelAll()
            }
        }
    }

    @Test func aStreamThatCannotOpenInTimeEndsWithARetryAndTheBrowserComesBack() async throws {
        try await Fleet.with(nodes: 1, heartbeatInterval: Self.heartbeat) { fleet in
            await fleet.redisServer.kill()
            let token = try await fleet.client(0).access(username: "ann")
            let source = BrowserEventSource(client: fleet.client(0), path: "/connect?token=\(token)")
            await withDiscardingTaskGroup { group in
                group.addTask { await source.run() }
                var seen: [BrowserEventSource.Occurrence] = []
                let started = ContinuousClock.now
                for await occurrence in source.occurrences {
                    seen.append(occurrence)
                    if occurrence == .error { break }
                }
                // Held for about the open wait (15 s), then ended: the browser reconnects.
                let held = ContinuousClock.now - started
                #expect(seen == [.open, .error], "\(seen)")
                #expect(held >= .seconds(14) && held < .seconds(25), "\(held)")
                try? await fleet.redisServer.restart()
                for await occurrence in source.occurrences {
                    if case .message(let event) = occurrence {
                        #expect(event.event == "connected")
                        break
                    }
                    #expect(occurrence == .open, "\(occurrence)")
                }
                group.cancelAll()
            }
        }
    }
}
