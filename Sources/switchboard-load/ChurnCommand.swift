import ArgumentParser
import Foundation
import SignalingClient

/// Joins per second: each peer joins a room of its own and leaves it again, as fast as the
/// fleet answers (closed loop) or at a fixed rate, through a node chosen at random. The rooms
/// are all different, so on a Redis Cluster their slots spread over every shard.
struct ChurnCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "churn",
        abstract: "Peers join and leave rooms of their own: joins (and leaves) per second.")

    @OptionGroup var options: FleetOptions
    @Option(help: "Peers, each joining and leaving one room after another.") var peers = 32
    @Option(help: "Seconds to run for.") var duration = 10.0
    @Option(help: "Joins per second over all peers; 0 runs closed-loop (each peer waits for its last leave).")
    var rate = 0.0

    func run() async throws {
        let nodes = try options.fleet()
        let all = try await Peer.connectMany(peers, nodes: nodes, prefix: "churn")
        let run = UUID().uuidString.prefix(8)
        let start = monotonicNanoseconds()
        let deadline = start + UInt64(duration * 1e9)
        let pacer = Pacer(start: start, rate: rate, senders: peers)
        let (latencies, joins, errors) = try await withThrowingTaskGroup(of: (Latencies, Int, Int).self) { group in
            for (index, peer) in all.enumerated() {
                group.addTask {
                    var (latencies, joins, errors) = (Latencies(), 0, 0)
                    while true {
                        let sentAt = try await pacer.due(joins + errors, offset: Double(index) / Double(peers))
                        if sentAt >= deadline { break }
                        let room = "churn-\(run)-\(index)-\(joins + errors)"
                        let joined = try await peer.post("/\(room)/join", via: nodes.randomElement()!).status
                        latencies.record(nanoseconds: monotonicNanoseconds() - sentAt)
                        let left = try await peer.post("/\(room)/leave", via: nodes.randomElement()!).status
                        if joined == 200, left == 200 { joins += 1 } else { errors += 1 }
                    }
                    return (latencies, joins, errors)
                }
            }
            var (all, joins, errors) = (Latencies(), 0, 0)
            for try await (latencies, peerJoins, peerErrors) in group {
                all.add(latencies)
                joins += peerJoins
                errors += peerErrors
            }
            return (all, joins, errors)
        }
        let elapsed = Double(monotonicNanoseconds() - start) / 1e9
        all.forEach { $0.stream.close() }
        var report = Report(
            title: "churn: \(peers) peers over \(nodes.count) node(s), "
                + (rate > 0 ? "\(Int(rate)) joins/s offered" : "closed loop") + ", \(Int(duration)) s (a join and a leave each)",
            columns: ["joins", "per_second", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors"])
        var row: [String: Any] = ["joins": joins, "per_second": Double(joins) / elapsed, "errors": errors]
        row.merge(latencies.summary) { $1 }
        report.rows.append(row)
        report.print(json: options.json)
    }
}
