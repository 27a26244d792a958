import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SignalingClient

struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "K sender→receiver pairs across nodes: delivered throughput, latency, lost, duplicated, reordered.")

    @OptionGroup var options: FleetOptions
    @Option(help: "Sender→receiver pairs; a pair's sender posts to the node after its receiver's.") var pairs = 16
    @Option(help: "Messages per second over all pairs; 0 runs closed-loop (each sender waits for its last reply).")
    var rate = 0.0
    @Option(help: "Seconds to send for.") var duration = 10.0
    @Option(help: "Bytes of padding per message, besides the sequence number and timestamp.") var padding = 100

    func run() async throws {
        let nodes = try options.fleet()
        let counters = Counters()
        let receivers = try await openMany(pairs) { index in
            try await ReceiverStream.open(name: "receiver\(index)", node: nodes[index % nodes.count], counters: counters)
        }
        defer { receivers.forEach { $0.close() } }
        // Receivers and senders share one room, so any server that limits relays to room
        // members lets them through.
        let room = "relay-\(UUID().uuidString.prefix(8))"
        for receiver in receivers {
            _ = try await SignalingClient(host: receiver.node.host, port: receiver.node.port).request(.POST, "/\(room)/join", token: receiver.token)
        }
        let senders = try await Peer.connectMany(pairs, nodes: nodes, prefix: "sender")
        defer { senders.forEach { $0.stream.close() } }
        for sender in senders { _ = try await sender.post("/\(room)/join", via: sender.node) }

        // Every sender connects first; then all start together.
        let padding = String(repeating: "x", count: padding)
        var sending: [(channel: Channel, done: EventLoopFuture<Void>)] = []
        for (receiver, sender) in zip(receivers, senders) {
            let node = nodes[(nodes.firstIndex { $0.port == receiver.node.port && $0.host == receiver.node.host }! + 1) % nodes.count]
            let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
            let done = eventLoop.makePromise(of: Void.self)
            let channel = try await connectHTTP(host: node.host, port: node.port, group: eventLoop, requests: .encoded) {
                RelaySender(receiver: receiver.id, token: sender.token, node: node, padding: padding, counters: counters, done: done)
            }
            sending.append((channel, done.futureResult))
        }
        let progress = Progress()
        progress.start("relay")
        let start = monotonicNanoseconds()
        let pacer = Pacer(start: start, rate: rate, senders: pairs)
        let stop = start + UInt64(duration * 1e9)
        receivers.forEach { $0.listen() }
        for sender in sending { sender.channel.pipeline.fireUserInboundEventTriggered(RelaySender.Start(pacer: pacer, stop: stop)) }
        let progressTask = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                let elapsed = Double(monotonicNanoseconds() - start) / 1e9
                progress.update(String(format: "sent %d, delivered %d (%.0f/s)", counters.sentCount, counters.deliveredCount, Double(counters.deliveredCount) / elapsed))
            }
        }
        for sender in sending { try await sender.done.get() }
        var latencies = Latencies()
        for receiver in receivers { latencies.add(try await receiver.finished.get()) }
        progressTask.cancel()
        progress.stop()
        let elapsed = min(Double(monotonicNanoseconds() - start), duration * 1e9) / 1e9

        var report = Report(
            title: "relay: \(pairs) pairs over \(nodes.count) node(s), " + (rate > 0 ? "\(Int(rate)) msg/s offered" : "closed loop") + ", \(Int(duration)) s",
            columns: ["sent", "delivered", "per_second", "p50_ms", "p90_ms", "p99_ms", "max_ms", "lost", "duplicated", "reordered", "errors"])
        var row: [String: Any] = [
            "sent": counters.sentCount, "delivered": counters.deliveredCount,
            "per_second": Double(counters.deliveredCount) / elapsed,
            "lost": counters.sentCount - counters.deliveredCount + counters.duplicateCount,
            "duplicated": counters.duplicateCount, "reordered": counters.reorderedCount, "errors": counters.errorCount,
        ]
        row.merge(latencies.summary) { $1 }
        report.rows.append(row)
        report.print(json: options.json)
    }
}

/// Tallies shared by every sender and receiver task.
final class Counters: Sendable {
    private struct Values { var sent = 0, errors = 0, delivered = 0, duplicates = 0, reordered = 0 }
    private let values = NIOLockedValueBox(Values())

    func sent(ok: Bool) { values.withLockedValue { if ok { $0.sent += 1 } else { $0.errors += 1 } } }
    func delivered() { values.withLockedValue { $0.delivered += 1 } }
    func duplicate() { values.withLockedValue { $0.duplicates += 1 } }
    func reordered() { values.withLockedValue { $0.reordered += 1 } }

    var sentCount: Int { values.withLockedValue { $0.sent } }
    var errorCount: Int { values.withLockedValue { $0.errors } }
    var deliveredCount: Int { values.withLockedValue { $0.delivered } }
    var duplicateCount: Int { values.withLockedValue { $0.duplicates } }
    var reorderedCount: Int { values.withLockedValue { $0.reordered } }
}

/// The integer after the first `key` in `bytes` (a cheap read of our own compact JSON).
func integer(after key: [UInt8], in bytes: [UInt8]) -> Int? {
    guard let first = key.first else { return nil }
    var from = bytes.startIndex
    while let start = bytes[from...].firstIndex(of: first) {
        guard bytes[start...].starts(with: key) else {
            from = start + 1
            continue
        }
        var cursor = start + key.count
        let negative = cursor < bytes.endIndex && bytes[cursor] == UInt8(ascii: "-")
        if negative { cursor += 1 }
        var value = 0
        var digits = 0
        while cursor < bytes.endIndex, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[cursor]) {
            value = value &* 10 &+ Int(bytes[cursor] - UInt8(ascii: "0"))
            digits += 1
            cursor += 1
        }
        return digits > 0 ? (negative ? -value : value) : nil
    }
    return nil
}
