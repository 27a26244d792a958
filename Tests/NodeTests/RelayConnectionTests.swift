import Foundation
import HTTPServer
import SignalingClient
import Testing

/// Relays are served on their connection's event loop, in front of Hummingbird (`RelayHandler`):
/// the order of answers on a connection that carries other requests too, the checks the route
/// makes, and how such a connection closes.
@Suite("POST /relay on its connection")
struct RelayConnectionTests {
    typealias RawConnection = EventStreamConnectionTests.RawConnection

    /// RFC 9110's IMF-fixdate, the `Date` of every answer.
    static let httpDate: DateFormatter = {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter
    }()

    /// Ann and bob, on node 0, in one room.
    private func pair(_ fleet: Fleet, room: String) async throws -> (ann: Participant, bob: Participant) {
        let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
        let bob = try await Participant.connect("bob", fleet: fleet, node: 0)
        #expect(try await fleet.client(0).request(.POST, "/\(room)/join", token: bob.token).status == 200)
        #expect(try await fleet.client(0).request(.POST, "/\(room)/join", token: ann.token).status == 200)
        #expect(await nextSignal(bob.stream)?.event == "add-peer")
        return (ann, bob)
    }

    private func relay(_ from: Participant, to target: String, _ event: String, headers: [String] = []) -> String {
        RawConnection.request(
            "POST", "/relay/\(target)/\(event)", headers: ["Authorization: Bearer \(from.token)"] + headers, body: #"{"n":1}"#)
    }

    /// Pipelined in one write: a relay served on the loop, requests for Hummingbird, a relay
    /// behind one of them (which Hummingbird's route serves) and a refused relay. Each is
    /// answered, in the order sent, and the two relays answer alike.
    @Test func answersComeInTheOrderTheRequestsWereSent() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let (ann, bob) = try await pair(fleet, room: "order")
            let connection = try RawConnection(port: fleet.nodes[0].port)
            connection.send(
                raw: relay(ann, to: bob.id, "first") + RawConnection.request("GET", "/healthz") + relay(ann, to: bob.id, "second")
                    + relay(ann, to: "nobody", "lost") + RawConnection.request("GET", "/healthz"))
            var answers: [(head: String, body: String)] = []
            for _ in 0..<5 {
                guard let answer = try await connection.readAnswer() else {
                    Issue.record("no answer after \(answers.map(\.head)); then: \(connection.received)")
                    return
                }
                answers.append(answer)
            }
            #expect(answers.map { $0.head.prefix(12) } == ["HTTP/1.1 200", "HTTP/1.1 200", "HTTP/1.1 200", "HTTP/1.1 404", "HTTP/1.1 200"])
            #expect(answers[0].body == #"{"delivered":true}"#)
            #expect(answers[2].body == #"{"delivered":true}"#)
            #expect(answers[1].body.contains(#""status":"ok""#) && answers[4].body.contains(#""status":"ok""#))
            #expect(answers[3].body.contains("has no open stream"))
            for answer in [answers[0], answers[2]] {
                #expect(answer.head.lowercased().contains("content-type: application/json\r\n"), "\(answer.head)")
                #expect(answer.head.lowercased().contains("server: switchboard"), "\(answer.head)")
            }
            // Every answer is dated, the direct ones as Hummingbird's are (RFC 9110's format).
            for answer in answers {
                let date = answer.head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("date: ") }?.dropFirst(6)
                #expect(date.flatMap { Self.httpDate.date(from: String($0)) } != nil, "\(answer.head)")
            }
            #expect(await nextSignal(bob.stream)?.event == "first")
            #expect(await nextSignal(bob.stream)?.event == "second")
        }
    }

    /// A relay that asks to close is answered, then its connection closes; so is one whose client
    /// shut its side after sending it.
    @Test func aRelayIsAnsweredBeforeItsConnectionCloses() async throws {
        try await Fleet.with(nodes: 1) { fleet in
            let (ann, bob) = try await pair(fleet, room: "closing")
            let asking = try RawConnection(port: fleet.nodes[0].port)
            asking.send(raw: relay(ann, to: bob.id, "asked", headers: ["Connection: close"]) + RawConnection.request("GET", "/healthz"))
            let answer = try #require(try await asking.readToEnd()).lowercased()
            #expect(answer.hasPrefix("http/1.1 200"), "\(answer)")
            #expect(answer.contains("connection: close"), "\(answer)")
            #expect(!answer.contains(#""status""#), "\(answer)")

            let shutting = try RawConnection(port: fleet.nodes[0].port)
            shutting.send(raw: relay(ann, to: bob.id, "shut"))
            shutting.shutdownWrite()
            let last = try #require(try await shutting.readToEnd())
            #expect(last.hasPrefix("HTTP/1.1 200") && last.hasSuffix(#"{"delivered":true}"#), "\(last)")

            #expect(await nextSignal(bob.stream)?.event == "asked")
            #expect(await nextSignal(bob.stream)?.event == "shut")
        }
    }

    /// The checks of the route: the origin (403, no CORS headers, as on Hummingbird's routes),
    /// the token (401), the body (413 over the limit, the connection still usable; 400 if not
    /// JSON, with the token in the query); an allowed origin is echoed.
    @Test func theRoutesChecksHoldOnTheConnection() async throws {
        var configuration = Fleet.defaultConfiguration
        configuration.allowedOrigins = ["https://app.example"]
        try await Fleet.with(nodes: 1, configuration: configuration) { fleet in
            let (ann, bob) = try await pair(fleet, room: "checks")
            let connection = try RawConnection(port: fleet.nodes[0].port)

            connection.send(raw: relay(ann, to: bob.id, "stranger", headers: ["Origin: https://elsewhere.example"]))
            let stranger = try #require(try await connection.readAnswer())
            #expect(stranger.head.hasPrefix("HTTP/1.1 403") && stranger.body.contains("origin not allowed"), "\(stranger)")
            #expect(!stranger.head.lowercased().contains("access-control-allow-origin"), "\(stranger.head)")
            // The same stranger on a route Hummingbird serves (`OriginFilter`): the same refusal.
            connection.send(
                raw: RawConnection.request(
                    "POST", "/checks/leave", headers: ["Authorization: Bearer \(ann.token)", "Origin: https://elsewhere.example"]))
            let strangerLeaving = try #require(try await connection.readAnswer())
            #expect(strangerLeaving.head.hasPrefix("HTTP/1.1 403") && strangerLeaving.body == stranger.body, "\(strangerLeaving)")

            connection.send(raw: RawConnection.request("POST", "/relay/\(bob.id)/anonymous", body: "{}"))
            #expect(try #require(try await connection.readAnswer()).head.hasPrefix("HTTP/1.1 401"))

            let oversized = "\"" + String(repeating: "x", count: 65 * 1024) + "\""
            connection.send(
                raw: RawConnection.request("POST", "/relay/\(bob.id)/big", headers: ["Authorization: Bearer \(ann.token)"], body: oversized))
            let big = try #require(try await connection.readAnswer())
            #expect(big.head.hasPrefix("HTTP/1.1 413"), "\(big.head)")

            connection.send(raw: RawConnection.request("POST", "/relay/\(bob.id)/a.b.c~d?token=\(ann.token)", body: "{nope"))
            #expect(try #require(try await connection.readAnswer()).head.hasPrefix("HTTP/1.1 400"))

            connection.send(raw: relay(ann, to: bob.id, "page", headers: ["Origin: https://app.example"]))
            let page = try #require(try await connection.readAnswer())
            #expect(page.head.hasPrefix("HTTP/1.1 200"), "\(page.head)")
            #expect(page.head.lowercased().contains("access-control-allow-origin: https://app.example"), "\(page.head)")
            #expect(page.head.lowercased().contains("vary: origin"), "\(page.head)")

            #expect(await nextSignal(bob.stream)?.event == "page")
        }
    }
}
