import Foundation
import NIOConcurrencyHelpers
import RedisClient
import RedisServer
import SignalingClient
import Testing

/// A Redis Cluster that fails over or moves slots while relays flow between peers on two nodes.
/// Whatever happens to a shard: every relay acknowledged (200 or 202) arrives exactly once and
/// in order, the rooms stay as they were, and a newcomer's join sees every member.
@Suite("A cluster failing over and moving slots under traffic", .serialized)
struct ClusterTrafficTests {
    /// Every shard in turn gives way to its replica, by agreement or killed.
    @Test(arguments: RedisCluster.Failover.allCases)
    func everyShardFailsOverInTurn(_ how: RedisCluster.Failover) async throws {
        try await TrafficScenario.run { fleet, _ in
            let cluster = fleet.cluster
            for primary in try await cluster.primaries() {
                let replica = try await cluster.failOver(primary, how)
                print("failover (\(how)): \(primary.tcpPort ?? 0) -> \(replica.tcpPort ?? 0)")
            }
        }
    }

    /// The slot of a live room and the slot of a live peer move to another primary, with their
    /// keys, while the room's members relay to each other.
    @Test func theSlotsOfALiveRoomAndALivePeerMove() async throws {
        try await TrafficScenario.run { fleet, receivers in
            let cluster = fleet.cluster
            for slot in [HashSlot.of("{room-0}"), HashSlot.of("{\(receivers[0])}")] {
                let owner = try #require(try await cluster.owner(ofSlot: slot))
                let target = try #require(try await cluster.primaries().first { $0 !== owner })
                let migration = try await cluster.beginMigration(ofSlot: slot, to: target)
                // Half the keys first: scripts on the slot now meet ASK for some of their keys.
                try await migration.moveKeys(2)
                try await Task.sleep(for: .milliseconds(300))
                try await migration.finish()
                print("slot \(slot) moved: \(owner.tcpPort ?? 0) -> \(target.tcpPort ?? 0)")
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }
}

/// Continuity is per shard: while one shard fails over, streams whose channels all live on
/// other shards go on receiving live; those listening on the failed shard catch up after.
@Suite("Continuity per shard", .serialized)
struct ShardContinuityTests {
    @Test func aShardsFailoverHoldsOnlyTheStreamsListeningThere() async throws {
        try await Fleet.with(nodes: 2, on: .cluster, gracePeriod: .seconds(60), clusterNodeTimeout: 2000) { fleet in
            let topology = try await fleet.redis.topology()
            let (failing, healthy) = (topology.primaries[0].address, topology.primaries[1].address)
            // Each node probes its subscription on every shard: one channel of its own on each primary.
            for primary in try await fleet.cluster.primaries() {
                let probes = { try await primary.command("PUBSUB", "SHARDCHANNELS", "sb:node:*:probe").split(separator: "\n").count }
                let subscribed = try await fleet.eventually(seconds: 10) { try await probes() == 2 }
                let count = try await probes()
                #expect(subscribed, "\(count) probe channels on a primary")
            }
            /// A name whose hash tag's slot the primary at `address` owns.
            func name(_ prefix: String, on address: RedisEndpoint.Address) -> String {
                (0...).lazy.map { "\(prefix)-\($0)" }.first { topology.owner(of: "{\($0)}")?.address == address }!
            }
            func peer(_ id: String, node: Int) async throws -> Participant {
                let token = try await TestTokens.mint(id: id, username: id, secret: Fleet.secret)
                let stream = try await fleet.client(node).connect(token: token)
                #expect(await connectedPeerID(stream) == id)
                return Participant(name: id, token: token, id: id, stream: stream, node: node)
            }
            // x and y, and their room, live on the healthy shard; u and v, and theirs, on the failing one.
            let (x, y) = (try await peer(name("x", on: healthy), node: 0), try await peer(name("y", on: healthy), node: 1))
            let (u, v) = (try await peer(name("u", on: failing), node: 0), try await peer(name("v", on: failing), node: 1))
            let (calm, stormy) = (name("calm", on: healthy), name("stormy", on: failing))
            for (room, members) in [(calm, [x, y]), (stormy, [u, v])] {
                for member in members { #expect(try await fleet.client(1).request(.POST, "/\(room)/join", token: member.token).status == 200) }
                for member in members { #expect(await nextSignal(member.stream)?.event == "add-peer") }
            }

            guard case .tcp(_, let port) = failing, let primary = fleet.cluster.server(port: port) else {
                Issue.record("the failing primary is not one of the cluster's servers")
                return
            }
            let replica = try #require(try await fleet.cluster.replica(of: primary))
            await primary.kill()
            // The replica takes over after the 2 s node timeout at the earliest: until then x
            // gets y's relays live, each at once.
            let killed = ContinuousClock.now
            for number in 1...5 {
                #expect(try await fleet.client(1).request(.POST, "/relay/\(x.id)/note", token: y.token, body: "\(number)").status == 200)
                let event = await nextSignal(x.stream, seconds: 1)
                #expect(event?.event == "note" && json(event?.data ?? "")["data"] as? Int == number, "relay \(number): \(String(describing: event))")
            }
            let live = ContinuousClock.now - killed
            // Asked of the replica: the dead primary may already be flagged `fail` (the node
            // timeout passed) while its replica has not taken over.
            #expect(try await replica.command("ROLE").hasPrefix("slave"), "the failover was over before the relays were checked")
            print("continuity per shard: 5 relays delivered live \(live) after the other shard's primary was killed")

            // The failed shard comes back through its replica; u gets v's relays again.
            #expect(try await fleet.cluster.waitUntilHealthy())
            #expect(try await fleet.eventually(seconds: 20) {
                (try? await fleet.client(0).request(.POST, "/relay/\(u.id)/note", token: v.token, body: "0").status) == 200
            })
            #expect(await nextSignal(u.stream, seconds: 10)?.event == "note")
            [x, y, u, v].forEach { $0.stream.close() }
        }
    }
}

/// Three pairs of peers, each pair in a room of its own, the two of a pair on different nodes,
/// each peer's stream a browser-like EventSource that resumes with `Last-Event-ID`. Each
/// sender relays numbered messages to its partner, one after the other, through the node that
/// does not hold its stream, while `disruption` runs; then everything is checked.
enum TrafficScenario {
    static let pairs = 3

    /// - Parameter disruption: gets the fleet and the receivers' peer ids.
    static func run(_ disruption: @escaping @Sendable (Fleet, [String]) async throws -> Void) async throws {
        try await Fleet.with(nodes: 2, on: .cluster, gracePeriod: .seconds(60), clusterNodeTimeout: 2000) { fleet in
            var opened: [(sender: Browser, receiver: Browser)] = []
            for pair in 0..<pairs {
                opened.append((
                    try await Browser.open("sender\(pair)", fleet: fleet, node: pair % 2),
                    try await Browser.open("receiver\(pair)", fleet: fleet, node: (pair + 1) % 2)
                ))
            }
            let (senders, receivers) = (opened.map(\.sender), opened.map(\.receiver))
            for pair in 0..<pairs {
                for (browser, node) in [(senders[pair], (pair + 1) % 2), (receivers[pair], pair % 2)] {
                    #expect(try await fleet.client(node).request(.POST, "/room-\(pair)/join", token: browser.token).status == 200)
                }
                #expect(try await receivers[pair].waitFor { $0.event == "add-peer" } != nil)
                #expect(try await senders[pair].waitFor { $0.event == "add-peer" } != nil)
            }
            let stop = NIOLockedValueBox(false)
            let sentSoFar = NIOLockedValueBox([Int](repeating: 0, count: pairs))
            // Per pair: the numbers sent and each one's status.
            let statuses = try await withThrowingTaskGroup(of: (Int, [Int: Int]).self) { group in
                for pair in 0..<pairs {
                    group.addTask {
                        var statuses: [Int: Int] = [:]
                        var number = 0
                        while !stop.withLockedValue({ $0 }) {
                            number += 1
                            let response = try? await fleet.client((pair + 1) % 2).request(
                                .POST, "/relay/\(receivers[pair].id)/seq", token: senders[pair].token, body: "{\"n\":\(number)}")
                            statuses[number] = response?.status ?? -1
                            sentSoFar.withLockedValue { $0[pair] = number }
                            try await Task.sleep(for: .milliseconds(10))
                        }
                        return (pair, statuses)
                    }
                }
                // Traffic first, however busy the machine: the disruption meets relays in flight.
                _ = try await fleet.eventually(seconds: 30) { sentSoFar.withLockedValue { $0.allSatisfy { $0 >= 10 } } }
                try await disruption(fleet, receivers.map(\.id))
                #expect(try await fleet.cluster.waitUntilHealthy())
                try await Task.sleep(for: .seconds(1))
                stop.withLockedValue { $0 = true }
                return try await group.reduce(into: [Int: [Int: Int]]()) { $0[$1.0] = $1.1 }
            }

            for pair in 0..<pairs {
                // A last relay marks the end; it is retried until acknowledged.
                var marked = false
                for _ in 0..<100 where !marked {
                    let status = try? await fleet.client(pair % 2).request(
                        .POST, "/relay/\(receivers[pair].id)/end", token: senders[pair].token, body: "{}"
                    ).status
                    marked = status == 200 || status == 202
                    if !marked { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(marked)
                #expect(try await receivers[pair].waitFor(seconds: 30) { $0.event == "end" } != nil)
                let received = receivers[pair].events.filter { $0.event == "seq" }.compactMap {
                    (json($0.data)["data"] as? [String: Any])?["n"] as? Int
                }
                let sent = statuses[pair] ?? [:]
                let acknowledged = sent.filter { $0.value == 200 || $0.value == 202 }.keys.sorted()
                let refused = sent.filter { $0.value != 200 && $0.value != 202 }.keys.sorted()
                print("pair \(pair): \(sent.count) sent, \(acknowledged.count) acknowledged, \(refused.count) refused, \(received.count) received")
                #expect(!acknowledged.isEmpty)
                // Exactly once and in order: strictly increasing, and nothing acknowledged missing.
                #expect(zip(received, received.dropFirst()).allSatisfy { $0 < $1 }, "pair \(pair) received out of order or twice: \(received)")
                #expect(Set(acknowledged).subtracting(received).isEmpty, "pair \(pair) lost \(Set(acknowledged).subtracting(received).sorted())")
                #expect(Set(received).isSubset(of: Set(sent.keys)))
                // The room is as it was.
                #expect(try await fleet.roomMembers("room-\(pair)") == [senders[pair].id, receivers[pair].id])
            }
            // A newcomer in each room meets both members.
            for pair in 0..<pairs {
                let newcomer = try await Browser.open("newcomer\(pair)", fleet: fleet, node: pair % 2)
                #expect(try await fleet.client((pair + 1) % 2).request(.POST, "/room-\(pair)/join", token: newcomer.token).status == 200)
                var met: Set<String> = []
                while met.count < 2, let event = try await newcomer.waitFor(seconds: 10, { $0.event == "add-peer" }) {
                    if let id = (json(event.data)["peer"] as? [String: Any])?["id"] as? String { met.insert(id) }
                }
                #expect(met == [senders[pair].id, receivers[pair].id])
                newcomer.close()
            }
            #expect(try await fleet.classicPublishesOnTheBus() == 0)
            (senders + receivers).forEach { $0.close() }
        }
    }
}

/// A peer whose stream is a browser's EventSource: it resumes by itself with `Last-Event-ID`.
final class Browser: Sendable {
    let token: String
    private let running: Task<Void, Never>
    private let reading: Task<Void, Never>
    private let state = NIOLockedValueBox<(events: [ServerSentEvent], read: Int, id: String)>(([], 0, ""))

    private init(token: String, source: BrowserEventSource) {
        self.token = token
        running = Task { await source.run() }
        let state = state
        reading = Task {
            for await occurrence in source.occurrences {
                guard case .message(let event) = occurrence, event.event != "ping" else { continue }
                state.withLockedValue { state in
                    if event.event == "connected", let id = (json(event.data)["user"] as? [String: Any])?["id"] as? String {
                        state.id = id
                    } else {
                        state.events.append(event)
                    }
                }
            }
        }
    }

    /// Opens the peer's stream on `node` and returns once it is connected.
    static func open(_ name: String, fleet: Fleet, node: Int) async throws -> Browser {
        let token = try await fleet.client(0).access(username: name)
        let browser = Browser(
            token: token, source: BrowserEventSource(client: fleet.client(node), path: "/connect?token=\(token)", initialReconnectionTime: 200))
        guard try await fleet.eventually({ !browser.id.isEmpty }) else {
            browser.close()
            throw SignalingClientError.connectionClosed
        }
        return browser
    }

    /// The peer id its stream's `connected` event gave.
    var id: String { state.withLockedValue { $0.id } }

    /// Every event so far but pings and `connected`.
    var events: [ServerSentEvent] { state.withLockedValue { $0.events } }

    /// The next event not yet waited for that `matches`; nil if none comes within `seconds`.
    func waitFor(seconds: Double = 10, _ matches: (ServerSentEvent) -> Bool) async throws -> ServerSentEvent? {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            let found = state.withLockedValue { state -> ServerSentEvent? in
                while state.read < state.events.count {
                    defer { state.read += 1 }
                    if matches(state.events[state.read]) { return state.events[state.read] }
                }
                return nil
            }
            if let found { return found }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    func close() {
        running.cancel()
        reading.cancel()
    }
}
