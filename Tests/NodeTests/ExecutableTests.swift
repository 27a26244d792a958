import Foundation
import RedisClient
import RedisServer
import SignalingClient
import Testing

/// The built `switchboard` binary, run as a user would: alone on its embedded Redis, and as
/// two processes sharing one Redis.
@Suite("switchboard serve, as a process")
struct ExecutableTests {
    static let secret = String(repeating: "process-secret-", count: 3)

    /// `switchboard` sits next to the test bundle in the build folder.
    static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("switchboard")
    }

    final class Node: @unchecked Sendable {
        let process = Process()
        let port: Int
        let log: URL

        init(arguments: [String]) throws {
            port = try RedisServerProcess.freePort()
            log = FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-\(port).log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.executableURL = ExecutableTests.binary
            // A short grace period: a closed stream's peer leaves its rooms after 1 s, not 10.
            process.arguments = ["serve", "--port", String(port), "--grace-period", "1"] + arguments
            process.environment = ProcessInfo.processInfo.environment.merging(
                ["SWITCHBOARD_TOKEN_SECRET": ExecutableTests.secret, "SWITCHBOARD_LOG_LEVEL": "warning"]) { $1 }
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }

        var client: SignalingClient { SignalingClient(port: port, idleTimeout: .seconds(60)) }

        func waitUntilHealthy() async throws {
            for _ in 0..<200 {
                if (try? await client.request(.GET, "/healthz").status) == 200 { return }
                try await Task.sleep(for: .milliseconds(50))
            }
            Issue.record("node did not become healthy: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        }

        /// What the node logged.
        var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        /// SIGTERM, then the exit status (nil if it did not exit within 10 s).
        func terminate() async -> Int32? {
            process.terminate()
            for _ in 0..<200 where process.isRunning { try? await Task.sleep(for: .milliseconds(50)) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                return nil
            }
            try? FileManager.default.removeItem(at: log)
            return process.terminationStatus
        }
    }

    /// ann on `first`, bob on `second`: join, discover, relay, leave.
    static func articleFlow(_ first: Node, _ second: Node) async throws {
        let annToken = try await first.client.access(username: "ann")
        let bobToken = try await second.client.access(username: "bob")
        let ann = try await first.client.connect(token: annToken)
        let bob = try await second.client.connect(token: bobToken)
        let annID = await connectedPeerID(ann)
        let bobID = await connectedPeerID(bob)
        for (node, token) in [(second, annToken), (first, bobToken)] {
            let joined = try await node.client.request(.POST, "/call/join", token: token)
            #expect(joined.status == 200, "\(joined.body)\nfirst node:\n\(first.logText)\nsecond node:\n\(second.logText)")
        }
        #expect(json(await nextSignal(ann)?.data ?? "")["offer"] as? Bool == false)
        #expect(json(await nextSignal(bob)?.data ?? "")["offer"] as? Bool == true)
        let relay = try await second.client.request(.POST, "/relay/\(annID)/session-description", token: bobToken, body: #"{"sdp":"x"}"#)
        #expect(relay.status == 200)
        #expect(await nextSignal(ann)?.event == "session-description")
        bob.close()
        let removed = await nextSignal(ann)
        #expect(removed?.event == "remove-peer")
        #expect((json(removed?.data ?? "")["peer"] as? [String: Any])?["id"] as? String == bobID)
        ann.close()
    }

    @Test func servesAloneOnItsEmbeddedRedis() async throws {
        let node = try Node(arguments: [])
        try await node.waitUntilHealthy()
        try await Self.articleFlow(node, node)
        #expect(await node.terminate() == 0)
    }

    @Test func twoProcessesShareOneRedis() async throws {
        let redisPort = try RedisServerProcess.freePort()
        try await RedisServerProcess.with(tcpPort: redisPort) { _ in
            let a = try Node(arguments: ["--redis", "redis://127.0.0.1:\(redisPort)", "--node-id", "a"])
            let b = try Node(arguments: ["--redis", "redis://127.0.0.1:\(redisPort)", "--node-id", "b"])
            try await a.waitUntilHealthy()
            try await b.waitUntilHealthy()
            try await Self.articleFlow(a, b)
            #expect(await a.terminate() == 0)
            #expect(await b.terminate() == 0)
        }
    }

    /// The load tool against two processes: a short storm and a short relay run, as JSON.
    @Test func loadToolDrivesTwoNodes() async throws {
        let redisPort = try RedisServerProcess.freePort()
        try await RedisServerProcess.with(tcpPort: redisPort) { _ in
            let flags = ["--redis", "redis://127.0.0.1:\(redisPort)", "--relay-rate", "0"]
            let a = try Node(arguments: flags)
            let b = try Node(arguments: flags)
            try await a.waitUntilHealthy()
            try await b.waitUntilHealthy()
            let nodes = ["--node", "http://127.0.0.1:\(a.port)", "--node", "http://127.0.0.1:\(b.port)", "--json"]
            let storm = try await Self.runLoadTool(["storm", "--clients", "12", "--rounds", "3"] + nodes)
            #expect(storm?["pairs"] as? Int == 3 * 12 * 11 / 2)
            #expect(storm?["misses"] as? Int == 0)
            #expect(storm?["duplicates"] as? Int == 0)
            // Closed loop, then paced (each sender's requests scheduled on its event loop).
            for pace in [[], ["--rate", "400"]] {
                let relay = try await Self.runLoadTool(["relay", "--pairs", "4", "--duration", "1"] + pace + nodes)
                #expect((relay?["delivered"] as? Int ?? 0) > 0)
                #expect(relay?["delivered"] as? Int == relay?["sent"] as? Int)
                #expect(relay?["lost"] as? Int == 0)
                #expect(relay?["reordered"] as? Int == 0)
                #expect(relay?["errors"] as? Int == 0)
                if !pace.isEmpty { #expect((300...500).contains(relay?["sent"] as? Int ?? 0), "400/s for 1 s: \(relay?["sent"] ?? "none")") }
            }
            #expect(await a.terminate() == 0)
            #expect(await b.terminate() == 0)
        }
    }

    /// Runs `switchboard-load` with `--json` and returns its one result row.
    static func runLoadTool(_ arguments: [String]) async throws -> [String: Any]? {
        let (status, output, errors) = try await run("switchboard-load", arguments)
        guard let report = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] else {
            Issue.record("switchboard-load \(arguments.joined(separator: " ")) exited \(status) with no report: \(errors)")
            return nil
        }
        return (report["results"] as? [[String: Any]])?.first
    }

    /// Runs one of the package's executables to its end (killed after `limit`): its exit status,
    /// stdout and stderr.
    static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], limit: Duration = .seconds(60)
    ) async throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = binary.deletingLastPathComponent().appendingPathComponent(executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SWITCHBOARD_") }.merging(environment) { $1 }
        // Output to files and an exit awaited by polling: a blocking read or wait would hold
        // one of the few threads every test in this process shares.
        let files = ["out", "err"].map { FileManager.default.temporaryDirectory.appendingPathComponent("\(executable)-\(UUID().uuidString).\($0)") }
        for file in files { _ = FileManager.default.createFile(atPath: file.path, contents: nil) }
        defer { for file in files { try? FileManager.default.removeItem(at: file) } }
        process.standardOutput = try FileHandle(forWritingTo: files[0])
        process.standardError = try FileHandle(forWritingTo: files[1])
        try process.run()
        // A hung tool must fail its test, not hang the whole run.
        let deadline = ContinuousClock.now + limit
        while process.isRunning, ContinuousClock.now < deadline + .seconds(5) {
            if ContinuousClock.now > deadline { kill(process.processIdentifier, SIGKILL) }
            try await Task.sleep(for: .milliseconds(20))
        }
        let (stdout, stderr) = (try String(contentsOf: files[0], encoding: .utf8), try String(contentsOf: files[1], encoding: .utf8))
        return (process.isRunning ? -1 : process.terminationStatus, stdout, stderr)
    }

    /// `switchboard token`, as an operator or a script runs it: prints the token alone.
    static func mintToken(_ arguments: [String], secret: String? = ExecutableTests.secret) async throws -> (status: Int32, token: String, error: String) {
        let (status, stdout, stderr) = try await run("switchboard", ["token"] + arguments, environment: secret.map { ["SWITCHBOARD_TOKEN_SECRET": $0] } ?? [:])
        return (status, stdout.trimmingCharacters(in: .whitespacesAndNewlines), stderr)
    }

    @Test func tokenRefusesWhatItCannotSign() async throws {
        let refusals: [(String, [String], String?)] = [
            ("no secret", ["--id", "tab-1", "--username", "ann"], nil),
            ("a short secret", ["--id", "tab-1", "--username", "ann"], "short"),
            ("an id with braces", ["--id", "a{b}", "--username", "ann"], Self.secret),
            ("an id too long", ["--id", String(repeating: "p", count: 65), "--username", "ann"], Self.secret),
            ("a bad room", ["--id", "tab-1", "--username", "ann", "--rooms", "ok,a:b"], Self.secret),
            ("a ttl past the maximum", ["--id", "tab-1", "--username", "ann", "--ttl", "604801"], Self.secret),
        ]
        for (name, arguments, secret) in refusals {
            let minted = try await Self.mintToken(arguments, secret: secret)
            #expect(minted.status != 0 && minted.token.isEmpty && !minted.error.isEmpty, "\(name): \(minted)")
        }
        let minted = try await Self.mintToken(["--id", "tab-1", "--username", "ann", "--rooms", "lobby,team-*", "--ttl", "60"])
        #expect(minted.status == 0 && minted.token.split(separator: ".").count == 3, "\(minted)")
        let payload = try #require(Data(base64URL: String(minted.token.split(separator: ".")[1])))
        let claims = try #require(try JSONSerialization.jsonObject(with: payload) as? [String: Any])
        #expect(claims["id"] as? String == "tab-1" && claims["username"] as? String == "ann")
        #expect(Set(claims["rooms"] as? [String] ?? []) == ["lobby", "team-*"])
        #expect((claims["exp"] as? Double).map { $0 - (claims["iat"] as? Double ?? 0) } == 60)
    }

    /// A production fleet: `--access off`, tokens from `switchboard token` as a backend would
    /// mint them, two nodes, a granted room.
    @Test func aFleetWithAccessOffRunsOnMintedTokens() async throws {
        let redisPort = try RedisServerProcess.freePort()
        try await RedisServerProcess.with(tcpPort: redisPort) { _ in
            let flags = ["--redis", "redis://127.0.0.1:\(redisPort)", "--access", "off"]
            let a = try Node(arguments: flags + ["--node-id", "a"])
            let b = try Node(arguments: flags + ["--node-id", "b"])
            try await a.waitUntilHealthy()
            try await b.waitUntilHealthy()
            let refused = try await a.client.request(.POST, "/access", body: #"{"username":"ann"}"#)
            #expect(refused.status == 404 && json(refused.body)["error"] != nil, "\(refused.status) \(refused.body)")
            #expect(json(try await a.client.request(.GET, "/status").body)["access"] as? String == "off")

            let ann = try await Self.mintToken(["--id", "ann-tab-1", "--username", "ann", "--rooms", "team-42-*"]).token
            let bob = try await Self.mintToken(["--id", "bob-tab-1", "--username", "bob", "--rooms", "team-42-call"]).token
            let annStream = try await a.client.connect(token: ann)
            let bobStream = try await b.client.connect(token: bob)
            #expect(await connectedPeerID(annStream) == "ann-tab-1")
            #expect(await connectedPeerID(bobStream) == "bob-tab-1")
            #expect(try await a.client.request(.POST, "/team-42-call/join", token: ann).status == 200)
            #expect(try await b.client.request(.POST, "/team-42-call/join", token: bob).status == 200)
            #expect(try await b.client.request(.POST, "/team-43-call/join", token: bob).status == 403)
            #expect(json(await nextSignal(annStream)?.data ?? "")["offer"] as? Bool == false)
            #expect(json(await nextSignal(bobStream)?.data ?? "")["offer"] as? Bool == true)
            #expect(try await b.client.request(.POST, "/relay/ann-tab-1/note", token: bob, body: #"{"hi":1}"#).status == 200)
            #expect(await nextSignal(annStream)?.event == "note")
            #expect(try await a.client.request(.POST, "/relay/bob-tab-1/note", token: ann, body: #"{"hi":2}"#).status == 200)
            #expect(await nextSignal(bobStream)?.event == "note")
            annStream.close()
            bobStream.close()
            #expect(await a.terminate() == 0)
            #expect(await b.terminate() == 0)
        }
    }

    /// A node killed with SIGKILL: the survivors take its peers out of their rooms, and each
    /// remaining member hears `remove-peer` exactly once though two survivors notice.
    /// For the clean-up time at the default heartbeat over several runs:
    /// `SWITCHBOARD_CRASH_HEARTBEAT=3 SWITCHBOARD_CRASH_RUNS=5 swift test --filter peersOfAKilledNode`.
    @Test(arguments: RedisKind.allCases) func peersOfAKilledNodeAreRemovedOnce(on kind: RedisKind) async throws {
        let environment = ProcessInfo.processInfo.environment
        let heartbeat = Double(environment["SWITCHBOARD_CRASH_HEARTBEAT"] ?? "") ?? 0.5
        let runs = Int(environment["SWITCHBOARD_CRASH_RUNS"] ?? "") ?? 1
        var times: [Duration] = []
        for _ in 0..<runs { times.append(try await Self.killANodeOfThree(heartbeat: heartbeat, on: kind)) }
        times.sort()
        print("crash clean-up over \(runs) run(s), heartbeat \(heartbeat) s (dead after \(3 * heartbeat) s): median \(times[times.count / 2]), max \(times.last!)")
    }

    /// Three nodes, a peer on each in one room; one node is killed. Returns how long the
    /// other two peers waited for its peer's `remove-peer`.
    static func killANodeOfThree(heartbeat: Double, on kind: RedisKind) async throws -> Duration {
        try await kind.withRedis { redisFlags, redis in
            let flags = redisFlags + ["--heartbeat-interval", String(heartbeat)]
            let a = try Node(arguments: flags + ["--node-id", "a"])
            let b = try Node(arguments: flags + ["--node-id", "b"])
            let c = try Node(arguments: flags + ["--node-id", "c"])
            for node in [a, b, c] { try await node.waitUntilHealthy() }
            var ids: [String] = []
            var streams: [EventStream] = []
            var tokens: [String] = []
            for (index, node) in [a, b, c].enumerated() {
                let token = try await node.client.access(username: "user\(index)")
                let stream = try await node.client.connect(token: token)
                ids.append(await connectedPeerID(stream))
                streams.append(stream)
                tokens.append(token)
                #expect(try await a.client.request(.POST, "/crash/join", token: token).status == 200)
            }
            // Drain the add-peers: user0 gets 2, user1 gets 2, user2 gets 2.
            for stream in streams { for _ in 0..<2 { #expect(await nextSignal(stream)?.event == "add-peer") } }

            let killedAt = ContinuousClock.now
            kill(b.process.processIdentifier, SIGKILL)
            for stream in [streams[0], streams[2]] {
                let event = await nextSignal(stream, seconds: 6 * heartbeat + 5)
                #expect(event?.event == "remove-peer")
                #expect((json(event?.data ?? "")["peer"] as? [String: Any])?["id"] as? String == ids[1])
            }
            let elapsed = ContinuousClock.now - killedAt
            print("crash clean-up: remove-peer \(elapsed) after kill -9 (heartbeat \(heartbeat) s)")
            // The bound the README promises: its record gone after three heartbeats, found
            // missing at two heartbeats of a survivor in a row, then cleaned up.
            #expect(elapsed < .seconds(6 * heartbeat))
            // Exactly once: the next event each survivor sees is its own marker, not a second remove-peer.
            for (index, stream) in [(0, streams[0]), (2, streams[2])] {
                _ = try await a.client.request(.POST, "/relay/\(ids[index])/marker", token: tokens[index], body: "{}")
                #expect(await nextSignal(stream)?.event == "marker")
            }
            let leftovers = try await redis.allKeys("*\(ids[1])*") + (try await redis.allKeys("sb:node:{b}*"))
            #expect(leftovers.isEmpty, "\(leftovers)")
            #expect(Set((try await redis.send(["HKEYS", "sb:room:{crash}:members"]).array ?? []).compactMap(\.string)) == [ids[0], ids[2]])
            streams.forEach { $0.close() }
            #expect(await a.terminate() == 0)
            #expect(await c.terminate() == 0)
            return elapsed
        }
    }

    /// A node killed and started again under its id before its record expired (so no other
    /// node cleans up after it): the new life ends the streams of the old one, with
    /// `remove-peer` to the members left, and keeps the stream a client opens on it at once.
    @Test func aNodeRestartedUnderItsIdEndsOnlyItsEarlierStreams() async throws {
        let redisPort = try RedisServerProcess.freePort()
        try await RedisServerProcess.with(tcpPort: redisPort) { server in
            let flags = ["--redis", "redis://127.0.0.1:\(redisPort)", "--heartbeat-interval", "3"]
            let a = try Node(arguments: flags + ["--node-id", "a"])
            let b = try Node(arguments: flags + ["--node-id", "b"])
            try await a.waitUntilHealthy()
            try await b.waitUntilHealthy()
            let annToken = try await a.client.access(username: "ann")
            let ann = try await a.client.connect(token: annToken)
            let annID = await connectedPeerID(ann)
            let bobToken = try await b.client.access(username: "bob")
            let bob = try await b.client.connect(token: bobToken)
            let bobID = await connectedPeerID(bob)
            #expect(try await b.client.request(.POST, "/restart/join", token: annToken).status == 200)
            #expect(try await b.client.request(.POST, "/restart/join", token: bobToken).status == 200)
            #expect(await nextSignal(bob)?.event == "add-peer")

            kill(a.process.processIdentifier, SIGKILL)
            ann.close()
            let again = try Node(arguments: flags + ["--node-id", "a"])
            try await again.waitUntilHealthy()
            // Opened while the new life's first heartbeat may be looking for the old streams.
            let carolToken = try await again.client.access(username: "carol")
            let carol = try await again.client.connect(token: carolToken)
            let carolID = await connectedPeerID(carol)
            let joined = try await again.client.request(.POST, "/restart/join", token: carolToken)
            #expect(joined.status == 200, "\(joined.body)")

            // bob hears ann leave (carol's arrival may come first).
            var removed: [String] = []
            while removed.isEmpty, let event = await nextSignal(bob, seconds: 15) {
                if event.event == "remove-peer" { removed.append((json(event.data)["peer"] as? [String: Any])?["id"] as? String ?? "") }
            }
            #expect(removed == [annID])
            let redis = RedisClient(endpoint: try RedisEndpoint(url: server.url))
            // One more heartbeat of the new life: carol is still there.
            try await Task.sleep(for: .seconds(3.5))
            #expect(Set((try await redis.send(["HKEYS", "sb:room:{restart}:members"]).array ?? []).compactMap(\.string)) == [carolID, bobID])
            #expect((try await redis.send(["SMEMBERS", "sb:node:{a}:streams"]).array ?? []).count == 1)
            await redis.close()
            carol.close()
            bob.close()
            #expect(await again.terminate() == 0)
            #expect(await b.terminate() == 0)
            _ = await a.terminate()
        }
    }

    /// Redis goes first, then the node is asked to stop while it holds streams: it still exits,
    /// and with status 0 (a node once hung here with its connections in CLOSE-WAIT).
    @Test func aNodeWhoseRedisIsGoneStillStopsCleanly() async throws {
        let redisPort = try RedisServerProcess.freePort()
        try await RedisServerProcess.with(tcpPort: redisPort) { server in
            let node = try Node(arguments: ["--redis", "redis://127.0.0.1:\(redisPort)"])
            try await node.waitUntilHealthy()
            var streams: [EventStream] = []  // ann, bob, carol
            for name in ["ann", "bob", "carol"] {
                let stream = try await node.client.connect(token: try await node.client.access(username: name))
                #expect(await stream.next()?.event == "connected")
                streams.append(stream)
            }
            await server.kill()
            // One client goes away while Redis is down (its clean-up cannot run); two stay.
            streams[0].close()
            #expect(try await node.client.request(.POST, "/r/join", token: try await node.client.access(username: "bob")).status == 503)
            #expect(await node.terminate() == 0)
            streams.forEach { $0.close() }
        }
    }

    /// A node's memory with many streams of which a tenth stop reading while relays keep
    /// coming: the silent ones are cut off once their queues fill, and a second wave of silent
    /// streams finds the memory the first one left. CI runs 100 streams; the README's figure:
    /// `SWITCHBOARD_MEMORY_STREAMS=1000 swift test --filter memoryStaysBounded`.
    @Test func memoryStaysBoundedWhenATenthOfTheStreamsStopReading() async throws {
        let total = Int(ProcessInfo.processInfo.environment["SWITCHBOARD_MEMORY_STREAMS"] ?? "") ?? 100
        let stalled = total / 10
        let redisPort = try RedisServerProcess.freePort()
        try await RedisServerProcess.with(tcpPort: redisPort) { _ in
            let node = try Node(arguments: [
                "--redis", "redis://127.0.0.1:\(redisPort)", "--relay-rate", "0", "--join-rate", "0", "--max-room-size", "5000",
            ])
            try await node.waitUntilHealthy()
            func rss() -> Int {
                let status = (try? String(contentsOfFile: "/proc/\(node.process.processIdentifier)/status", encoding: .utf8)) ?? ""
                let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
                return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024  // MiB
            }
            let baseline = rss()
            let connection = try await PersistentConnection.connect(port: node.port)
            let senderToken = try await node.client.access(username: "sender")
            let sender = try await node.client.connect(token: senderToken)
            _ = try await connection.request(.POST, "/big/join", token: senderToken)
            var readers: [EventStream] = []
            var readerIDs: [String] = []
            var sockets: [Int32] = []
            /// A new peer in the room, its stream read (an EventStream) or not (a raw socket).
            func addPeer(reading: Bool) async throws -> String {
                let token = try await node.client.access(username: "p")
                if reading { readers.append(try await node.client.connect(token: token)) } else {
                    sockets.append(try SlowClientTests.openUnreadStream(port: node.port, token: token))
                }
                for _ in 0..<250 {
                    if try await connection.request(.POST, "/big/join", token: token).status == 200 { break }
                    try await Task.sleep(for: .milliseconds(20))  // the raw socket's stream is still opening
                }
                let data = Data(base64URL: String(token.split(separator: ".")[1])) ?? Data()
                return json(String(decoding: data, as: UTF8.self))["id"] as? String ?? ""
            }
            for _ in 0..<(total - stalled) { readerIDs.append(try await addPeer(reading: true)) }
            let payload = #"{"sdp":""# + String(repeating: "x", count: 40_000) + #""}"#
            var cutOff = 0
            /// Silent streams join; then, round after round, a small relay to every reader and a
            /// 40 KB one to every silent stream, whose socket buffers (several MiB on loopback)
            /// and then queue fill until the node cuts it off. Returns the highest RSS seen.
            func wave() async throws -> (peak: Int, rounds: Int) {
                var silent: [String] = []
                for _ in 0..<stalled { silent.append(try await addPeer(reading: false)) }
                var peak = rss()
                var rounds = 0
                let target = cutOff + stalled
                repeat {
                    for id in silent { _ = try await connection.request(.POST, "/relay/\(id)/offer", token: senderToken, body: payload) }
                    for id in readerIDs { _ = try await connection.request(.POST, "/relay/\(id)/offer", token: senderToken, body: "{}") }
                    rounds += 1
                    peak = max(peak, rss())
                    let metrics = try await connection.request(.GET, "/metrics").body
                    cutOff = Int(OperationsTests.sample(metrics, "switchboard_slow_clients_dropped_total") ?? 0)
                } while cutOff < target && rounds < 400
                return (peak, rounds)
            }
            let open = rss()
            let first = try await wave()
            let second = try await wave()
            try await Task.sleep(for: .seconds(1))
            let after = rss()
            print("memory: \(total) streams, \(stalled) stop reading; node RSS \(baseline) MiB at start, \(open) MiB with \(total - stalled) streams open, at most \(first.peak) MiB while \(stalled) silent streams filled up and were cut off (\(first.rounds) rounds of relays), at most \(second.peak) MiB while \(stalled) more did (\(second.rounds) rounds), \(after) MiB after")
            #expect(cutOff == 2 * stalled)
            // The readers were not cut off: a last relay reaches one of them.
            let last = try await connection.request(.POST, "/relay/\(readerIDs[0])/last", token: senderToken, body: "{}")
            #expect(last.status == 200, "\(last.body)")
            var sawLast = false
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline, let event = await nextSignal(readers[0]) {
                if event.event == "last" { sawLast = true; break }
            }
            #expect(sawLast)
            sockets.forEach { close($0) }
            readers.forEach { $0.close() }
            sender.close()
            await connection.close()
            _ = await node.terminate()
        }
    }

    @Test func refusesAShortSecretClearly() async throws {
        let node = try Node(arguments: ["--token-secret", "short"])
        for _ in 0..<200 where node.process.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!node.process.isRunning)
        #expect(node.process.terminationStatus != 0)
        let log = try String(contentsOf: node.log, encoding: .utf8)
        try? FileManager.default.removeItem(at: node.log)
        #expect(log.contains("at least 32"))
    }
}
