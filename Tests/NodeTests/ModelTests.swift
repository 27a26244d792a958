import Foundation
import NIOConcurrencyHelpers
import RedisClient
import RedisServer
import SignalingClient
import Testing

/// Three `switchboard` processes on one Redis, driven by seeded random interleavings of
/// connect, join, leave, relay, drop-and-resume, disconnect and one node killed with SIGKILL.
/// When activity stops, every guarantee of DESIGN.md is checked against what each client saw.
///
/// CI runs the seeds below; `SWITCHBOARD_MODEL_RUNS=200 swift test --filter ModelTests`
/// (or `make model RUNS=200`) runs that many seeds more.
@Suite("Randomized model: three nodes, one Redis or a cluster")
struct ModelTests {
    static let seeds: [UInt64] = {
        let extra = Int(ProcessInfo.processInfo.environment["SWITCHBOARD_MODEL_RUNS"] ?? "") ?? 0
        return [1, 2, 3] + (0..<UInt64(extra)).map { 1000 + $0 }
    }()

    /// Every seed on one Redis, the first on a cluster too.
    static let runs: [(RedisKind, UInt64)] = seeds.map { (.single, $0) } + [(.cluster, seeds[0])]

    @Test(arguments: runs)
    func guaranteesHoldUnderRandomInterleavings(on kind: RedisKind, seed: UInt64) async throws {
        try await kind.withRedis { redisFlags, redis in
            let flags = redisFlags + ["--heartbeat-interval", "0.3", "--relay-rate", "0", "--join-rate", "0"]
            let nodes = try (0..<3).map { try ExecutableTests.Node(arguments: flags + ["--node-id", "n\($0)"]) }
            for node in nodes { try await node.waitUntilHealthy() }
            let world = World(nodes: nodes, seed: seed)
            do {
                try await world.run(rounds: 40)
                let report = try await world.check(redis: redis)
                print("model seed \(seed) on \(kind): \(report.summary)")
                #expect(report.problems.isEmpty, "seed \(seed) on \(kind): \(report.problems.prefix(20))")
            } catch {
                Issue.record("seed \(seed) on \(kind): \(error)")
            }
            await world.closeAll()
            for node in nodes where node.process.isRunning { _ = await node.terminate() }
        }
    }
}

/// A small seeded generator (SplitMix64): the same seed, the same choices.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One simulated browser: its token, its stream (read by a task that reconnects with
/// `Last-Event-ID` when the stream ends on its own, as EventSource does), and what it saw.
actor ModelClient {
    let name: String
    let token: String
    let id: String
    private let world: World
    /// Rooms the server said it joined (200) and has not left, in its current session.
    var rooms: Set<String> = []
    var views: [String: RoomView] = [:]
    /// Relay numbers received, per sender.
    var received: [String: [Int]] = [:]
    /// Counts fresh sessions: relays sent to an earlier one need not arrive.
    var generation = 0
    var lastEventID: String?
    var wantsStream = false
    var resumes = 0
    private var stream: EventStream?
    private var reader: Task<Void, Never>?
    private var opening = false

    init(name: String, token: String, id: String, world: World) {
        (self.name, self.token, self.id, self.world) = (name, token, id, world)
    }

    var hasStream: Bool { stream != nil }

    /// Opens a stream on `node`, resuming after the last event seen if `resume`.
    func open(on node: ExecutableTests.Node, resume: Bool) async {
        wantsStream = true
        // One stream at a time, as a browser's one EventSource.
        guard !opening, stream == nil else { return }
        opening = true
        defer { opening = false }
        guard let stream = try? await node.client.connect(token: token, lastEventID: resume ? lastEventID : nil) else { return }
        guard let connected = await stream.next(), connected.event == "connected" else {
            stream.close()
            return
        }
        self.stream = stream
        note(connected)
        reader = Task { await self.read(stream) }
    }

    private func note(_ event: ServerSentEvent) {
        if let id = event.id { lastEventID = id }
        switch event.event {
        case "connected":
            if json(event.data)["resumed"] as? Bool == true {
                resumes += 1
            } else {
                generation += 1
                rooms = []
                views = [:]
            }
        case "add-peer", "remove-peer":
            guard let room = RoomView.roomID(of: event) else { return }
            views[room, default: RoomView()].apply(event)
        case "note":
            let data = json(event.data)
            guard let sender = (data["peer"] as? [String: Any])?["id"] as? String, let n = data["data"] as? Int else { return }
            received[sender, default: []].append(n)
        default:
            break
        }
    }

    private func read(_ stream: EventStream) async {
        var replaced = false
        while let event = await stream.next() {
            // Events still buffered from a stream the client closed are not seen.
            guard self.stream === stream else { return }
            if event.event == "replaced" { replaced = true }
            note(event)
        }
        // Ended by the server or a dead node (not by us): come back like EventSource does.
        guard self.stream === stream, wantsStream, !replaced else { return }
        self.stream = nil
        try? await Task.sleep(for: .milliseconds(300))
        if wantsStream, self.stream == nil, let node = world.randomLiveNode() { await open(on: node, resume: true) }
    }

    /// Closes the stream; `forGood`: the client does not come back by itself.
    func close(forGood: Bool) {
        if forGood { wantsStream = false }
        let stream = self.stream
        self.stream = nil
        stream?.close()
    }

    func joined(_ room: String) { rooms.insert(room) }
    func left(_ room: String) { rooms.remove(room) }
}

/// The fleet, the clients, the seeded choices and the record of relays sent.
final class World: Sendable {
    let nodes: [ExecutableTests.Node]
    private let random: NIOLockedValueBox<SeededGenerator>
    private let killed = NIOLockedValueBox<Int?>(nil)
    private let clients = NIOLockedValueBox<[ModelClient]>([])
    /// Every relay answered 2xx: sender, receiver, number, receiver's generation when sent.
    private let relays = NIOLockedValueBox<[(from: String, to: String, n: Int, generation: Int)]>([])
    private let counters = NIOLockedValueBox<[String: Int]>([:])
    static let roomNames = ["r0", "r1", "r2"]

    init(nodes: [ExecutableTests.Node], seed: UInt64) {
        self.nodes = nodes
        random = NIOLockedValueBox(SeededGenerator(seed: seed))
    }

    func pick(_ range: Range<Int>) -> Int { random.withLockedValue { Int.random(in: range, using: &$0) } }
    func chance(_ p: Double) -> Bool { random.withLockedValue { Double.random(in: 0..<1, using: &$0) < p } }

    func randomLiveNode() -> ExecutableTests.Node? {
        let live = nodes.indices.filter { $0 != killed.withLockedValue { $0 } }
        return live.isEmpty ? nil : nodes[live[pick(0..<live.count)]]
    }

    private func count(_ name: String) { counters.withLockedValue { $0[name, default: 0] += 1 } }

    func run(rounds: Int) async throws {
        for i in 0..<8 {
            let node = nodes[i % nodes.count]
            let token = try await node.client.access(username: "c\(i)")
            let stream = try await node.client.connect(token: token)
            let id = await connectedPeerID(stream)
            stream.close()
            clients.withLockedValue { $0.append(ModelClient(name: "c\(i)", token: token, id: id, world: self)) }
        }
        let all = clients.withLockedValue { $0 }
        for client in all { await client.open(on: randomLiveNode()!, resume: false) }
        let killRound = pick(rounds / 4..<(3 * rounds / 4))
        for round in 0..<rounds {
            if round == killRound { await killANode() }
            // A few clients act at once, each one thing (a browser does one thing at a time).
            let actors = random.withLockedValue { all.shuffled(using: &$0) }
            await withTaskGroup(of: Void.self) { group in
                for client in actors.prefix(1 + pick(0..<4)) {
                    let choice = pick(0..<100)
                    group.addTask { await self.act(client, choice: choice, everyone: all) }
                }
            }
            try await Task.sleep(for: .milliseconds(pick(0..<60)))
        }
        // Activity stops: everyone who dropped for good is gone, everyone else has a stream.
        for client in all {
            if await !client.hasStream, await client.wantsStream, let node = randomLiveNode() { await client.open(on: node, resume: true) }
        }
    }

    private func act(_ client: ModelClient, choice: Int, everyone: [ModelClient]) async {
        guard let node = randomLiveNode() else { return }
        let room = Self.roomNames[pick(0..<Self.roomNames.count)]
        switch choice {
        case 0..<25:
            count("join")
            if (try? await node.client.request(.POST, "/\(room)/join", token: client.token).status) == 200 { await client.joined(room) }
        case 25..<35:
            count("leave")
            if (try? await node.client.request(.POST, "/\(room)/leave", token: client.token).status) == 200 { await client.left(room) }
        case 35..<75:
            count("relay")
            let mine = await client.rooms
            var peers: [ModelClient] = []
            for other in everyone where other !== client {
                if await !other.rooms.isDisjoint(with: mine) { peers.append(other) }
            }
            guard !peers.isEmpty else { return }
            let target = peers[pick(0..<peers.count)]
            let n = counters.withLockedValue { counters in
                counters["relay-n", default: 0] += 1
                return counters["relay-n"]!
            }
            let generation = await target.generation
            let status = try? await node.client.request(.POST, "/relay/\(target.id)/note", token: client.token, body: "\(n)").status
            if status == 200 || status == 202 { relays.withLockedValue { $0.append((client.id, target.id, n, generation)) } }
        case 75..<87:
            count("drop-and-resume")
            await client.close(forGood: false)
            try? await Task.sleep(for: .milliseconds(pick(0..<300)))
            if let node = randomLiveNode() { await client.open(on: node, resume: true) }
        case 87..<94:
            count("disconnect")
            await client.close(forGood: true)
        default:
            count("connect")
            if await !client.hasStream { await client.open(on: node, resume: false) }
        }
    }

    private func killANode() async {
        let victim = pick(0..<nodes.count)
        killed.withLockedValue { $0 = victim }
        kill(nodes[victim].process.processIdentifier, SIGKILL)
        count("kill -9")
    }

    func closeAll() async {
        for client in clients.withLockedValue({ $0 }) { await client.close(forGood: true) }
    }

    struct Report {
        var problems: [String] = []
        var summary = ""
    }

    /// Waits for things to settle, then checks every guarantee.
    func check(redis: RedisClient) async throws -> Report {
        let all = clients.withLockedValue { $0 }
        var report = Report()
        // Settled: each live client's views equal the rooms in Redis (or 15 s pass).
        var attempts = 0
        while true {
            report = try await compare(all, redis: redis)
            attempts += 1
            if report.problems.isEmpty || attempts > 75 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let counts = counters.withLockedValue { $0 }.filter { $0.key != "relay-n" }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
        var resumes = 0
        for client in all { resumes += await client.resumes }
        report.summary = counts.joined(separator: ", ") + ", resumed \(resumes), relays checked \(relays.withLockedValue { $0.count })"
        return report
    }

    private func compare(_ all: [ModelClient], redis: RedisClient) async throws -> Report {
        var report = Report()
        var byID: [String: ModelClient] = [:]
        for client in all { byID[client.id] = client }
        var members: [String: Set<String>] = [:]
        for room in Self.roomNames {
            members[room] = Set((try await redis.send(["HKEYS", "sb:room:{\(room)}:members"]).array ?? []).compactMap(\.string))
        }
        for client in all {
            let live = await client.hasStream
            let views = await client.views
            for (room, view) in views where !view.violations.isEmpty {
                report.problems.append("\(client.name) \(room): \(view.violations)")
            }
            for room in Self.roomNames {
                let inRoom = members[room]!.contains(client.id)
                // No ghosts: only peers with a stream are in rooms.
                if inRoom && !live { report.problems.append("ghost: \(client.name) in \(room) without a stream") }
                guard live else { continue }
                // Views equal membership.
                let expected = inRoom ? members[room]!.subtracting([client.id]) : []
                let seen = Set(views[room]?.peers.keys.map { $0 } ?? [])
                if seen != expected {
                    report.problems.append("\(client.name) sees \(seen.compactMap { byID[$0]?.name }.sorted()) in \(room), Redis has \(expected.compactMap { byID[$0]?.name }.sorted())")
                }
            }
        }
        // Pairwise discovery: for each pair in a room, exactly one was told to offer.
        for room in Self.roomNames {
            let ids = members[room]!.sorted()
            for (i, a) in ids.enumerated() {
                for b in ids[(i + 1)...] {
                    guard let ca = byID[a], let cb = byID[b] else { continue }
                    let aOffers = await ca.views[room]?.peers[b]
                    let bOffers = await cb.views[room]?.peers[a]
                    if let aOffers, let bOffers, aOffers == bOffers {
                        report.problems.append("\(ca.name) and \(cb.name) in \(room): both offer=\(aOffers)")
                    }
                }
            }
        }
        // Relays: in order and never twice; every one sent to a session that lasted arrived.
        for client in all {
            let received = await client.received
            for (sender, numbers) in received where numbers != numbers.sorted() || Set(numbers).count != numbers.count {
                report.problems.append("\(client.name) got \(byID[sender]?.name ?? sender)'s relays out of order or twice: \(numbers)")
            }
            let generation = await client.generation
            let live = await client.hasStream
            for relay in relays.withLockedValue({ $0 }) where relay.to == client.id && relay.generation == generation && live {
                if !(received[relay.from] ?? []).contains(relay.n) {
                    report.problems.append("\(client.name) never got relay \(relay.n) from \(byID[relay.from]?.name ?? relay.from)")
                }
            }
        }
        return report
    }
}
