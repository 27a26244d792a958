import Benchmark
import Coordinator
import Foundation
import HTTPServer
import LuaScripts
import NIOCore
import RedisClient
import RedisServer

// Protocol work (no I/O) and, against a live redis-server started here, the join and relay
// round trips of Switchboard's scripts side by side with the original article's sequence of
// commands on the same client. Nobody subscribes to the channels in either case, so both
// pay the same for their PUBLISHes.

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 10,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000,
        // For `baseline check` (Benchmarks/compare.sh). This VM's host steals time: the same
        // code's p50 moved by up to 1.8× from one run to the next, and 2.3× on 2026-12-03, so
        // only a time 2.5× slower fails. Allocations do not move with the host: 5% more fails.
        thresholds: [
            .wallClock: .init(relative: [.p50: 150]),
            .throughput: .init(relative: [.p50: 60]),
            .mallocCountTotal: .init(relative: [.p50: 5]),
        ]
    )
    Benchmark.setup = { try await Live.start() }
    Benchmark.teardown = { await Live.stop() }

    // MARK: Protocol

    Benchmark("RESP reader: 1,000 pub/sub messages (\(Wire.messages.readableBytes) bytes)") { benchmark in
        for _ in benchmark.scaledIterations {
            let reader = HiredisReader()
            try reader.feed(Wire.messages)
            while let reply = try reader.next() { blackHole(reply) }
        }
    }

    Benchmark("RESP formatter: 1,000 EVALSHA join commands (\(Wire.joinCommandBytes * 1000) bytes)") { benchmark in
        var buffer = ByteBuffer()
        buffer.reserveCapacity(Wire.joinCommandBytes * 1000)
        for _ in benchmark.scaledIterations {
            buffer.clear()
            for _ in 0..<1000 { CommandEncoder.encode(Wire.joinCommand, into: &buffer) }
            blackHole(buffer)
        }
    }

    Benchmark("SSE: encode 1,000 add-peer frames") { benchmark in
        let encoder = SSEEncoder()
        var buffer = ByteBuffer()
        var event = StreamEvent(name: "add-peer", data: ByteBuffer(string: Wire.addPeerJSON))
        event.id = "1795345739537-0-1;demo=1795345739540-0-2"  // a peer in one room
        for _ in benchmark.scaledIterations {
            buffer.clear()
            for _ in 0..<1000 { encoder.encode(event, into: &buffer) }
            blackHole(buffer)
        }
    }

    // A relay's body as the node checks it, beside the Foundation parse it replaced.
    Benchmark("relay body: 1,000 SDP offers checked and passed on (RelayBody)") { benchmark in
        for _ in benchmark.scaledIterations {
            for _ in 0..<1000 { blackHole(RelayBody.compactJSON(Wire.offerBody)) }
        }
    }

    Benchmark("relay body: 1,000 SDP offers parsed by JSONSerialization (the check before)") { benchmark in
        for _ in benchmark.scaledIterations {
            for _ in 0..<1000 {
                let bytes = Data(Wire.offerBody.readableBytesView)
                blackHole(try JSONSerialization.jsonObject(with: bytes, options: [.fragmentsAllowed]))
            }
        }
    }

    // MARK: Live Redis: the client

    // What RedisClient (shared by every task, reconnecting by itself) adds to a round trip.
    Benchmark("round trip: PING on RedisClient") { benchmark in
        for _ in benchmark.scaledIterations { try await Live.redis.send(["PING"]) }
    }

    Benchmark("round trip: PING on a bare RedisConnection") { benchmark in
        for _ in benchmark.scaledIterations { try await Live.connection.send(["PING"]) }
    }

    // MARK: Live Redis: join

    for size in [2, 10, 100] {
        let room = "bench-\(size)"
        Benchmark("join, room of \(size): join.lua with the members read, one MULTI/EXEC (one publish, on the room's channel)") { benchmark in
            for _ in benchmark.scaledIterations {
                benchmark.startMeasurement()
                try await Live.join(room, Live.joiner)
                benchmark.stopMeasurement()
                try await Live.scripts.run(
                    .leave, keys: [Live.keys.roomMembers(RoomID(room)!), Live.keys.roomLog(RoomID(room)!), Live.keys.roomJoins(RoomID(room)!)],
                    arguments: [Live.keys.channel(RoomID(room)!), "joiner", "0"] + Live.logArguments)
            }
        } setup: {
            try await Live.fillSwitchboardRoom(room, members: size - 1)
        }

        Benchmark("join, room of \(size): coordinator (checks, join.lua, then remember-room.lua)") { benchmark in
            for _ in benchmark.scaledIterations {
                benchmark.startMeasurement()
                _ = try await Live.coordinator.join(Live.joiner, room: RoomID(room)!)
                benchmark.stopMeasurement()
                try await Live.coordinator.leave(Live.joiner, room: RoomID(room)!)
            }
        } setup: {
            try await Live.fillSwitchboardRoom(room, members: size - 1)
        }

        Benchmark("join, room of \(size): article (SADD, SMEMBERS, 2n PUBLISH, SADD)") { benchmark in
            for _ in benchmark.scaledIterations {
                benchmark.startMeasurement()
                try await Article.join(room: room, user: "joiner")
                benchmark.stopMeasurement()
                _ = try await Live.redis.pipeline([["SREM", "channels:\(room)", "joiner"], ["SREM", "joiner:channels", room]])
            }
        } setup: {
            try await Article.fillRoom(room, members: size - 1)
        }
    }

    // MARK: Live Redis: relay

    Benchmark("relay: relay.lua, one EVALSHA (session and shared-room check, XADD to the log, PUBLISH)") { benchmark in
        let data = "{\"peer\":\(Live.joiner.json),\"data\":{\"candidate\":\"candidate:1 1 udp 1 127.0.0.1 5000 typ host\"}}"
        let peer = Live.joiner.id
        for _ in benchmark.scaledIterations {
            try await Live.scripts.run(
                .relay, keys: [Live.keys.peer(peer), Live.keys.peerRooms(peer), Live.keys.peerLog(peer)],
                arguments: [Live.keys.channel(peer), "ice-candidate", data] + Live.logArguments + ["relay-bench"])
        }
    }

    Benchmark("relay: article (PUBLISH)") { benchmark in
        let message = #"{"event":"ice-candidate","data":{"peer":{"id":"joiner"},"data":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host"}}}"#
        for _ in benchmark.scaledIterations {
            try await Live.redis.send(["PUBLISH", "messages:joiner", message])
        }
    }
}

/// Bytes as Redis and the nodes see them.
enum Wire {
    static let addPeerJSON = #"{"peer":{"id":"6f1c1b1e-5d6a-4a35-9a43-1c1f0d8f2e55","username":"ann"},"roomId":"demo","offer":false}"#

    /// 1,000 `smessage` pushes as a subscriber connection receives them.
    static let messages: ByteBuffer = {
        var buffer = ByteBuffer()
        let channel = "sb:peer:{6f1c1b1e-5d6a-4a35-9a43-1c1f0d8f2e55}:events"
        let payload = "add-peer\n" + addPeerJSON
        for _ in 0..<1000 {
            buffer.writeString("*3\r\n$8\r\nsmessage\r\n$\(channel.utf8.count)\r\n\(channel)\r\n$\(payload.utf8.count)\r\n\(payload)\r\n")
        }
        return buffer
    }()

    /// A browser's offer as it posts it to `/relay/:peer/offer`: about 1.5 KB of SDP in JSON.
    static let offerBody: ByteBuffer = {
        let lines = [
            "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
            "a=extmap-allow-mixed", "a=msid-semantic: WMS", "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
            "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0", "a=ice-ufrag:Zk3v", "a=ice-pwd:4mQdX8yV2k1b9Lr0aPpQ7c3T",
            "a=ice-options:trickle", "a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08",
            "a=setup:actpass", "a=mid:0", "a=sendrecv", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0", "a=mid:1", "a=sctp-port:5000", "a=max-message-size:262144",
        ]
        return ByteBuffer(string: #"{"type":"offer","sdp":""# + lines.joined(separator: "\\r\\n") + #"\r\n"}"#)
    }()

    static let joinCommand = [
        "EVALSHA", String(repeating: "a", count: 40), "1", "sb:room:{demo}:members", "demo",
        "6f1c1b1e-5d6a-4a35-9a43-1c1f0d8f2e55", #"{"id":"6f1c1b1e-5d6a-4a35-9a43-1c1f0d8f2e55","username":"ann"}"#, "sb:peer:{",
    ]

    static let joinCommandBytes: Int = {
        var buffer = ByteBuffer()
        CommandEncoder.encode(joinCommand, into: &buffer)
        return buffer.readableBytes
    }()
}

/// The live redis-server and the clients the Redis benchmarks share.
enum Live {
    nonisolated(unsafe) static var server: RedisServerProcess?
    nonisolated(unsafe) static var redis: RedisClient!
    nonisolated(unsafe) static var connection: RedisConnection!
    nonisolated(unsafe) static var scripts: ScriptRegistry!
    nonisolated(unsafe) static var coordinator: Coordinator!
    static let keys = try! KeySpace(prefix: "sb:")
    static let joiner = PeerUser(id: PeerID("joiner")!, username: "joiner")

    static func start() async throws {
        guard server == nil else { return }
        let server = try await RedisServerProcess.start()
        let endpoint = try RedisEndpoint(url: server.url)
        self.server = server
        redis = RedisClient(endpoint: endpoint)
        connection = try await RedisConnection.connect(to: endpoint)
        scripts = ScriptRegistry(redis: redis)
        try await scripts.loadAll()
        coordinator = Coordinator(redis: redis, keys: keys, nodeID: "bench")
        // The joiner has an open stream as far as Redis knows (the coordinator checks), in a
        // room the relay benchmark names as shared.
        try await scripts.run(
            .connect, keys: [keys.peer(joiner.id), keys.peerLog(joiner.id)],
            arguments: ["s", "bench", joiner.json, keys.channel(joiner.id), "fresh"])
        try await redis.send(["HSET", keys.peerRooms(joiner.id), "relay-bench", "0-0"])
    }

    static func stop() async {
        await redis?.close()
        await connection?.close()
        await server?.stop()
        server = nil
    }

    static func fillSwitchboardRoom(_ room: String, members: Int) async throws {
        try await start()
        let key = keys.roomMembers(RoomID(room)!)
        try await redis.send(["DEL", key])
        for i in 0..<members {
            let user = PeerUser(id: PeerID("member-\(i)")!, username: "member-\(i)")
            try await join(room, user)
        }
    }

    /// What a node passes for the event logs: 1,000 entries, kept 70 s (a 10 s grace period).
    static let logArguments = [String(Coordinator.eventLogLength), "70000"]

    /// join.lua as a node runs it (no room size limit): with the members read just before it,
    /// in one transaction.
    static func join(_ room: String, _ user: PeerUser) async throws {
        let id = RoomID(room)!
        let call = ScriptRegistry.Call(
            .join, keys: [keys.roomMembers(id), keys.roomLog(id), keys.roomJoins(id)],
            arguments: [keys.channel(id), user.id.rawValue, user.json, "0"] + logArguments)
        _ = try await scripts.run(call, reading: ["HVALS", keys.roomMembers(id)], beforeScript: true)
    }
}

/// The original article's join, command for command (node-redis pipelines the PUBLISHes and
/// the last SADD on its one connection, as `pipeline` does here).
enum Article {
    static func join(room: String, user: String) async throws {
        try await Live.redis.send(["SADD", "\(user):channels", room])
        let peers = try await Live.redis.send(["SMEMBERS", "channels:\(room)"]).array ?? []
        var commands: [[String]] = []
        commands.reserveCapacity(peers.count * 2 + 1)
        for peer in peers.compactMap(\.string) {
            commands.append(["PUBLISH", "messages:\(peer)", #"{"event":"add-peer","data":{"peer":{"id":"\#(user)","username":"\#(user)"},"roomId":"\#(room)","offer":false}}"#])
            commands.append(["PUBLISH", "messages:\(user)", #"{"event":"add-peer","data":{"peer":{"id":"\#(peer)"},"roomId":"\#(room)","offer":true}}"#])
        }
        commands.append(["SADD", "channels:\(room)", user])
        _ = try await Live.redis.pipeline(commands)
    }

    static func fillRoom(_ room: String, members: Int) async throws {
        try await Live.start()
        try await Live.redis.send(["DEL", "channels:\(room)"])
        for i in 0..<members { try await join(room: room, user: "member-\(i)") }
    }
}
