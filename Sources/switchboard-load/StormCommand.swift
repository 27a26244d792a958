import ArgumentParser
import Foundation
import SignalingClient

struct StormCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storm",
        abstract: "N clients join one room at the same moment; count pairwise-discovery misses and duplicates.")

    @OptionGroup var options: FleetOptions
    @Option(help: "Clients, spread over the nodes.") var clients = 50
    @Option(help: "Rounds, each in a new room.") var rounds = 20
    @Option(help: "Seconds to wait for an expected event before counting it missed.") var timeout = 5.0

    func run() async throws {
        let nodes = try options.fleet()
        let peers = try await Peer.connectMany(clients, nodes: nodes, prefix: "storm")
        let ids = peers.map(\.id)
        let run = UUID().uuidString.prefix(8)
        var tally = PairTally()
        var violations = 0
        var roundTimes = Latencies()
        let progress = Progress()
        progress.start("storm")
        for round in 0..<rounds {
            let room = "storm-\(run)-\(round)"
            let start = monotonicNanoseconds()
            let results = try await withThrowingTaskGroup(of: (String, RoomView, UInt64).self) { group in
                for peer in peers {
                    group.addTask {
                        let status = try await peer.post("/\(room)/join", via: nodes.randomElement()!).status
                        guard status == 200 else { throw Peer.Failed(description: "join answered \(status)") }
                        return try await settle(peer, room: room, marker: "storm-end-\(round)", expected: clients - 1)
                    }
                }
                return try await group.reduce(into: [(String, RoomView, UInt64)]()) { $0.append($1) }
            }
            var views: [String: RoomView] = [:]
            for (id, view, completed) in results {
                views[id] = view
                violations += view.violations.count
                roundTimes.record(nanoseconds: completed - start)
            }
            tally.add(views: views, ids: ids)
            // Leave, so a server's rooms-per-peer limit does not end the run (a server without
            // POST /:room/leave, like the original, just answers 404).
            try await withThrowingTaskGroup(of: Void.self) { group in
                for peer in peers { group.addTask { _ = try await peer.post("/\(room)/leave", via: peer.node) } }
                try await group.waitForAll()
            }
            progress.update("round \(round + 1)/\(rounds): \(tally)")
        }
        progress.stop()
        peers.forEach { $0.stream.close() }
        var report = Report(
            title: "storm: \(clients) clients over \(nodes.count) node(s), \(rounds) rounds",
            columns: ["pairs", "misses", "duplicates", "both_offer", "neither_offer", "order_violations", "p50_ms", "p99_ms", "max_ms"])
        var row: [String: Any] = [
            "pairs": tally.pairs, "misses": tally.misses, "duplicates": tally.duplicates,
            "both_offer": tally.bothOffer, "neither_offer": tally.neitherOffer, "order_violations": violations,
        ]
        row.merge(roundTimes.summary) { $1 }
        report.rows.append(row)
        report.print(json: options.json)
    }

    /// Reads until `expected` add-peers arrived (or the timeout), then sends itself a marker
    /// relay: whatever arrives before the marker is extra. Returns the view and when it was
    /// complete.
    private func settle(_ peer: Peer, room: String, marker: String, expected: Int) async throws -> (String, RoomView, UInt64) {
        var view = RoomView()
        var completed = monotonicNanoseconds()
        while view.added.count < expected {
            guard let event = await peer.stream.nextSignal(timeout: .milliseconds(Int(timeout * 1000))) else { break }
            guard RoomView.roomID(of: event) == room else { continue }
            view.apply(event)
            completed = monotonicNanoseconds()
        }
        _ = try await peer.post("/relay/\(peer.id)/\(marker)", via: peer.node, body: "{}")
        while let event = await peer.stream.nextSignal(timeout: .milliseconds(Int(timeout * 1000))), event.event != marker {
            if RoomView.roomID(of: event) == room { view.apply(event) }
        }
        return (peer.id, view, completed)
    }
}
