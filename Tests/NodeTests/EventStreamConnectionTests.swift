import Foundation
import HTTPServer
import SignalingClient
import Testing

/// `GET /connect` is served on the connection itself, before Hummingbird (`EventStreamHandler`):
/// what a connection carries around a stream, the checks a route would have made, and the
/// node's shutdown.
@Suite("GET /connect on its connection")
struct EventStreamConnectionTests {
    /// A plain socket: requests written as text, the answers read as text, without waiting
    /// forever.
    final class RawConnection {
        private var fd: Int32
        private(set) var received = ""
        /// The node closed (or reset) the connection.
        private(set) var ended = false

        init(port: Int) throws {
            fd = try loopbackSocket(port: port)
        }

        deinit { close() }

        /// Closes the socket, once: a second `close` could close a descriptor NIO reuses.
        func close() {
            guard fd >= 0 else { return }
            Glibc.close(fd)
            fd = -1
        }

        func send(_ method: String, _ path: String, headers: [String] = []) {
            send(raw: Self.request(method, path, headers: headers))
        }

        /// A request as text; a body comes with its `Content-Length`.
        static func request(_ method: String, _ path: String, headers: [String] = [], body: String? = nil) -> String {
            let headers = headers + (body.map { ["Content-Length: \($0.utf8.count)"] } ?? [])
            return "\(method) \(path) HTTP/1.1\r\nHost: x\r\n" + headers.map { "\($0)\r\n" }.joined() + "\r\n" + (body ?? "")
        }

        /// Writes `text` in one `send`.
        func send(raw text: String) {
            _ = text.withCString { Glibc.send(fd, $0, strlen($0), 0) }
        }

        /// Shuts the sending side (a FIN), as a client that is done does.
        func shutdownWrite() {
            shutdown(fd, Int32(SHUT_WR))
        }

        /// Everything that comes until the node closes the connection, or nil if it is still
        /// open after 10 s.
        func readToEnd() async throws -> String? {
            let marker = "\u{0}never sent\u{0}"
            guard try await read(until: marker) == nil, ended else { return nil }
            return received
        }

        /// Reads until `text` has come (true) or the connection ended or 10 s passed (false);
        /// what was read up to `text` is taken out of `received`.
        func read(until text: String) async throws -> String? {
            let deadline = ContinuousClock.now + .seconds(10)
            while true {
                if let range = received.range(of: text) {
                    defer { received.removeSubrange(..<range.upperBound) }
                    return String(received[..<range.upperBound])
                }
                guard try await receive(before: deadline) else { return nil }
            }
        }

        /// The next answer with a `Content-Length` body: its head and its body, taken out of
        /// `received`; nil if it did not come whole within 10 s.
        func readAnswer() async throws -> (head: String, body: String)? {
            guard let head = try await read(until: "\r\n\r\n") else { return nil }
            let lengthLine = head.lowercased().split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
            guard let length = lengthLine.flatMap({ Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) }) else {
                return nil
            }
            let deadline = ContinuousClock.now + .seconds(10)
            while received.utf8.count < length {
                guard try await receive(before: deadline) else { return nil }
            }
            let end = received.utf8.index(received.utf8.startIndex, offsetBy: length)
            defer { received.removeSubrange(..<end) }
            return (head, String(received[..<end]))
        }

        /// Waits for more bytes: false once the connection ended or the deadline passed.
        private func receive(before deadline: ContinuousClock.Instant) async throws -> Bool {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while ContinuousClock.now < deadline {
                let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if count == 0 {
                    ended = true
                    return false
                }
                if count < 0 {
                    guard errno == EAGAIN || errno == EWOULDBLOCK else {
                        ended = true
                        return false
                    }
                    try await Task.sleep(for: .milliseconds(10))
                    continue
                }
                received += String(decoding: buffer[..<count], as: UTF8.self)
                return true
            }
            return false
        }
    }

    /// A browser reuses keep-alive connections: its EventSource may go out on one that has
    /// fetched a page or a token, and a refused stream leaves its connection usable.
    @Test func oneConnectionCarriesARefusalARequestAndThenAStream() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let client = fleet.client(0)
            let bob = try await Participant.connect("bob", fleet: fleet, node: 0)
            let annToken = try await client.access(username: "ann")
            let connection = try RawConnection(port: fleet.nodes[0].port)

            connection.send("GET", "/connect", headers: ["Accept: text/event-stream"])
            let refusal = try #require(try await connection.read(until: "\"}}"))
            #expect(refusal.hasPrefix("HTTP/1.1 401"), "\(refusal)")
            #expect(refusal.contains(#"{"error":{"message":"missing token"#), "\(refusal)")

            connection.send("GET", "/healthz")
            let health = try #require(try await connection.read(until: "}"))
            #expect(health.hasPrefix("HTTP/1.1 200"), "\(health)")

            connection.send("GET", "/connect?token=\(annToken)", headers: ["Accept: text/event-stream"])
            let head = try #require(try await connection.read(until: "event: connected"))
            #expect(head.hasPrefix("HTTP/1.1 200"), "\(head)")
            #expect(head.lowercased().contains("content-type: text/event-stream"), "\(head)")
            let annID = try await SlowClientTests.peerID(token: annToken, fleet: fleet)
            #expect(try await client.request(.POST, "/reuse/join", token: annToken).status == 200)
            #expect(try await client.request(.POST, "/reuse/join", token: bob.token).status == 200)
            #expect(try await client.request(.POST, "/relay/\(annID)/note", token: bob.token, body: #"{"n":1}"#).status == 200)
            #expect(try await connection.read(until: #"event: note"#) != nil)

            // The client goes away: its stream closes, and bob hears it leave.
            connection.close()
            var events: [String] = []
            while let event = await nextSignal(bob.stream), event.event != "remove-peer" { events.append(event.event) }
            #expect(events == ["add-peer"])
            bob.stream.close()
        }
    }

    /// The origin rules of the rest of the API: a page from an origin not allowed is refused; an
    /// allowed one gets its origin echoed, so that it may read the stream.
    @Test func originRulesHoldForStreams() async throws {
        var configuration = Fleet.defaultConfiguration
        configuration.allowedOrigins = ["https://app.example"]
        try await Fleet.with(nodes: 1, configuration: configuration) { fleet in
            let token = try await fleet.client(0).access(username: "ann")
            let stranger = try RawConnection(port: fleet.nodes[0].port)
            stranger.send("GET", "/connect?token=\(token)", headers: ["Accept: text/event-stream", "Origin: https://elsewhere.example"])
            let refusal = try #require(try await stranger.read(until: "\"}}"))
            #expect(refusal.hasPrefix("HTTP/1.1 403"), "\(refusal)")
            #expect(refusal.contains("origin not allowed"), "\(refusal)")
            #expect(!refusal.lowercased().contains("access-control-allow-origin"), "\(refusal)")

            let page = try RawConnection(port: fleet.nodes[0].port)
            page.send("GET", "/connect?token=\(token)", headers: ["Accept: text/event-stream", "Origin: https://app.example"])
            let head = try #require(try await page.read(until: "event: connected")).lowercased()
            #expect(head.hasPrefix("http/1.1 200"), "\(head)")
            #expect(head.contains("access-control-allow-origin: https://app.example"), "\(head)")
            #expect(head.contains("vary: origin"), "\(head)")
        }
    }

    /// A connection the client shuts is closed by the node too, whatever it carried: nothing, a
    /// refused stream, or a request Hummingbird answered.
    @Test func aConnectionTheClientShutsIsClosed() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let port = fleet.nodes[0].port
            let silent = try RawConnection(port: port)
            silent.shutdownWrite()
            #expect(try await silent.readToEnd() == "")

            let refused = try RawConnection(port: port)
            refused.send("GET", "/connect", headers: ["Accept: text/event-stream"])
            _ = try #require(try await refused.read(until: "\"}}"))
            refused.shutdownWrite()
            #expect(try await refused.readToEnd() == "")

            let served = try RawConnection(port: port)
            served.send("GET", "/healthz")
            _ = try #require(try await served.read(until: "}"))
            served.shutdownWrite()
            #expect(try await served.readToEnd() == "")
        }
    }

    /// A request pipelined behind a stream's is not served; if the stream is refused, the
    /// connection closes with the refusal, so that the client knows to send it again.
    @Test func aRefusedStreamWithARequestBehindItClosesItsConnection() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let connection = try RawConnection(port: fleet.nodes[0].port)
            connection.send(raw: RawConnection.request("GET", "/connect", headers: ["Accept: text/event-stream"]) + RawConnection.request("GET", "/healthz"))
            let answer = try #require(try await connection.readToEnd()).lowercased()
            #expect(answer.hasPrefix("http/1.1 401"), "\(answer)")
            #expect(answer.contains("connection: close"), "\(answer)")
            #expect(!answer.contains("\"status\""), "\(answer)")
        }
    }

    /// A request on a connection that is streaming ends the stream: an EventSource sends none,
    /// and NIO's decoder would keep each one waiting for an answer for the stream's whole life.
    @Test func aRequestSentOnAStreamsConnectionClosesIt() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let token = try await fleet.client(0).access(username: "ann")
            let connection = try RawConnection(port: fleet.nodes[0].port)
            connection.send("GET", "/connect?token=\(token)", headers: ["Accept: text/event-stream"])
            let head = try #require(try await connection.read(until: "event: connected"))
            #expect(!head.lowercased().contains("transfer-encoding"), "\(head)")
            connection.send("GET", "/healthz")
            #expect(try await connection.readToEnd() != nil)
            #expect(try await fleet.eventually(seconds: 10) { fleet.nodes[0].coordinator.openStreamCount == 0 })
        }
    }

    /// Bytes that are not HTTP get a 400 and the connection closes, as Hummingbird would answer
    /// them (it has not been added to a connection that sent nothing before).
    @Test func aRequestThatDoesNotParseIsRefusedAndItsConnectionClosed() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let connection = try RawConnection(port: fleet.nodes[0].port)
            connection.send(raw: "NOT HTTP AT ALL\r\n\r\n")
            let answer = try #require(try await connection.readToEnd())
            #expect(answer.hasPrefix("HTTP/1.1 400"), "\(answer)")
        }
    }

    /// A node asked to stop ends its streams (the client sees its connection close and comes
    /// back elsewhere), closes their sessions, and only then has stopped.
    @Test func aStoppingNodeEndsItsStreamsBeforeItStops() async throws {
        try await Fleet.with(nodes: 2) { fleet in
            let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
            let bob = try await Participant.connect("bob", fleet: fleet, node: 1)
            #expect(try await fleet.client(1).request(.POST, "/stop/join", token: ann.token).status == 200)
            #expect(try await fleet.client(1).request(.POST, "/stop/join", token: bob.token).status == 200)
            #expect(await nextSignal(bob.stream)?.event == "add-peer")

            let stopping = ContinuousClock.now
            await fleet.nodes[0].group.triggerGracefulShutdown()
            var rest: [String] = []
            while let event = await nextSignal(ann.stream, seconds: 10) { rest.append(event.event) }
            #expect(rest.allSatisfy { $0 == "add-peer" }, "\(rest)")
            #expect(ContinuousClock.now - stopping < .seconds(10))
            _ = try? await fleet.nodes[0].task.value
            #expect(await nextSignal(bob.stream)?.event == "remove-peer")
            bob.stream.close()
        }
    }
}
