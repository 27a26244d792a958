import Foundation
import SignalingClient
import Testing

@Suite("A client that stops reading")
struct SlowClientTests {
    /// Opens an event stream on a raw socket that the test then stops reading, so the node's
    /// writes back up. Returns the socket; close it when done.
    static func openUnreadStream(port: Int, token: String) throws -> Int32 {
        // A small receive buffer, so the backlog lands on the node quickly.
        let fd = try loopbackSocket(port: port, receiveBuffer: 4096)
        let request = "GET /connect?token=\(token) HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        return fd
    }

    /// A sender with a stream and a silent peer whose stream is open on a socket nobody reads
    /// (`openUnreadStream`), both in `room` on node 0. Close `socket` when done.
    struct SilentPeer {
        let sender: Participant
        let token: String
        let id: String
        let socket: Int32
    }

    static func silentPeer(in room: String, fleet: Fleet) async throws -> SilentPeer {
        let client = fleet.client(0)
        let sender = try await Participant.connect("sender", fleet: fleet, node: 0)
        let token = try await client.access(username: "sleepy")
        let socket = try openUnreadStream(port: fleet.nodes[0].port, token: token)
        #expect(try await fleet.eventually { try await metric("switchboard_streams_open", fleet: fleet) == 2 })
        _ = try await client.request(.POST, "/\(room)/join", token: sender.token)
        _ = try await client.request(.POST, "/\(room)/join", token: token)
        return SilentPeer(sender: sender, token: token, id: try await peerID(token: token, fleet: fleet), socket: socket)
    }

    /// One series of node 0's `/metrics`.
    static func metric(_ series: String, fleet: Fleet) async throws -> Double? {
        OperationsTests.sample(try await fleet.client(0).request(.GET, "/metrics").body, series)
    }

    @Test func isCutOffAndCounted() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let client = fleet.client(0)
            let silent = try await Self.silentPeer(in: "slow", fleet: fleet)
            let (sender, sleepy, fd) = (silent.sender, silent.id, silent.socket)
            defer { close(fd) }
            let scrape = { try await client.request(.GET, "/metrics").body }

            // 40 KB relays: the socket buffers fill, the write to the socket blocks, the stream's
            // 1 MiB queue fills, and the node cuts the stream off and closes its connection
            // (before that fix, a write stuck on the silent client kept the stream forever).
            let payload = #"{"sdp":""# + String(repeating: "x", count: 40_000) + #""}"#
            // The stream is live: a first relay reaches the socket.
            #expect(try await client.request(.POST, "/relay/\(sleepy)/probe", token: sender.token, body: "{}").status == 200)
            var received = 0
            var buffer = [UInt8](repeating: 0, count: 65536)
            for _ in 0..<50 where !String(decoding: buffer.prefix(received), as: UTF8.self).contains("event: probe") {
                try await Task.sleep(for: .milliseconds(20))
                received += max(0, recv(fd, &buffer[received], buffer.count - received, Int32(MSG_DONTWAIT)))
            }
            #expect(String(decoding: buffer.prefix(received), as: UTF8.self).contains("event: probe"))
            var sent = 0
            var statuses: [Int: Int] = [:]
            while sent < 1000, OperationsTests.sample(try await scrape(), "switchboard_slow_clients_dropped_total") != 1 {
                let status = try await client.request(.POST, "/relay/\(sleepy)/offer", token: sender.token, body: payload).status
                statuses[status, default: 0] += 1
                sent += 1
            }
            let metrics = try await scrape()
            #expect(OperationsTests.sample(metrics, "switchboard_slow_clients_dropped_total") == 1, "after \(sent) relays: \(statuses)")
            #expect(try await fleet.eventually { OperationsTests.sample(try await scrape(), "switchboard_streams_open") == 1 })
            // Reset, not closed: a FIN would leave the node's socket holding megabytes queued
            // for a client that never reads, until the kernel gave up on it minutes later.
            #expect(try await Self.endOfReading(fd) == ECONNRESET, "the socket should be reset (ECONNRESET), not closed (-1)")
            // It left the room like any stream that ends; the sender was told.
            #expect(try await fleet.roomMembers("slow") == [sender.id])
            sender.stream.close()
        }
    }

    /// A stream replaced by a newer one while a write to its client is stuck (the client
    /// stopped reading): its final `replaced` event cannot go out, so the node closes the
    /// connection after `finalWriteDeadline` rather than keep it until the client goes.
    @Test func aReplacedStreamWhoseClientStoppedReadingIsClosed() async throws {
        // A queue far larger than the socket buffers: the write gets stuck, but the stream is
        // never cut off for falling behind.
        try await Fleet.with(nodes: 1, streamLimits: .init(maxQueuedEvents: 100_000, maxQueuedBytes: 256 << 20)) { fleet in
            let client = fleet.client(0)
            let silent = try await Self.silentPeer(in: "replaced", fleet: fleet)
            let (sender, token, sleepy) = (silent.sender, silent.token, silent.id)
            defer { close(silent.socket) }
            let open = { try await Self.metric("switchboard_streams_open", fleet: fleet) }
            // 16 MB of relays: more than the loopback socket buffers hold.
            let payload = #"{"sdp":""# + String(repeating: "x", count: 40_000) + #""}"#
            for _ in 0..<400 {
                let status = try await client.request(.POST, "/relay/\(sleepy)/offer", token: sender.token, body: payload).status
                #expect(status == 200)
            }

            // The peer opens a new stream (a second tab, or its browser gave up on the first).
            let second = try await client.connect(token: token)
            #expect(await second.next()?.event == "connected")
            let opened = ContinuousClock.now
            #expect(try await fleet.eventually(seconds: 15) { try await open() == 2 })
            print("replaced stream whose client stopped reading: gone \(ContinuousClock.now - opened) after the new one opened")
            #expect(try await Self.metric("switchboard_slow_clients_dropped_total", fleet: fleet) == 0)
            // The new stream is the peer's (a fresh session: it joins again): relays reach it.
            #expect(try await client.request(.POST, "/replaced/join", token: token).status == 200)
            #expect(try await client.request(.POST, "/relay/\(sleepy)/hello", token: sender.token, body: "{}").status == 200)
            var last: ServerSentEvent?
            repeat { last = await nextSignal(second) } while last != nil && last?.event != "hello"
            #expect(last?.event == "hello")
            second.close()
            sender.stream.close()
        }
    }

    /// Reads `fd` until it ends, for up to 5 s: the error that ended it (`ECONNRESET` for a
    /// reset), -1 for an orderly close, 0 if it is still open.
    static func endOfReading(_ fd: Int32) async throws -> Int32 {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if count == 0 { return -1 }
            if count < 0 {
                guard errno == EAGAIN || errno == EWOULDBLOCK else { return errno }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        return 0
    }

    static func peerID(token: String, fleet: Fleet) async throws -> String {
        let payload = try #require(Data(base64URL: String(token.split(separator: ".")[1])))
        return (try JSONSerialization.jsonObject(with: payload) as? [String: Any])?["id"] as? String ?? ""
    }
}
