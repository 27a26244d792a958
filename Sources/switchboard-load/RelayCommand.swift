import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
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
        let receivers = try await Peer.connectMany(pairs, nodes: nodes, prefix: "receiver")
        // Receivers and senders share one room, so any server that limits relays to room
        // members lets them through.
        let room = "relay-\(UUID().uuidString.prefix(8))"
        for receiver in receivers { _ = try await receiver.post("/\(room)/join", via: receiver.node) }
        let senders = try await Peer.connectMany(pairs, nodes: nodes, prefix: "sender")
        for sender in senders { _ = try await sender.post("/\(room)/join", via: sender.node) }

        let counters = Counters()
        let progress = Progress()
        progress.start("relay")
        let padding = String(repeating: "x", count: padding)
        let start = monotonicNanoseconds()
        let pacer = Pacer(start: start, rate: rate, senders: pairs)
        let stop = start + UInt64(duration * 1e9)
        let latencies = try await withThrowingTaskGroup(of: Latencies?.self) { group in
            for index in 0..<pairs {
                let receiver = receivers[index]
                let node = nodes[(nodes.firstIndex { $0.port == receiver.node.port && $0.host == receiver.node.host }! + 1) % nodes.count]
                let sender = senders[index]
                group.addTask {
                    let connection = try await PersistentConnection.connect(host: node.host, port: node.port)
                    defer { Task { await connection.close() } }
                    var sequence = 0
                    while true {
                        let sendAt = try await pacer.due(sequence)
                        if sendAt >= stop { break }
                        let body = #"{"s":\#(sequence),"t":\#(sendAt),"p":"\#(padding)"}"#
                        let result = try await connection.request(.POST, "/relay/\(receiver.id)/load", token: sender.token, body: body)
                        counters.sent(ok: result.status == 200)
                        sequence += 1
                    }
                    // Tell the receiver how many went out; it waits for them.
                    _ = try await connection.request(.POST, "/relay/\(receiver.id)/load-end", token: sender.token, body: #"{"s":\#(sequence)}"#)
                    return nil
                }
                group.addTask {
                    var latencies = Latencies()
                    var expected = 0
                    var seen = Set<Int>()
                    // Ten seconds without a message ends the stream (its load-end was lost).
                    let silence = SilenceWatchdog(limit: .seconds(10)) { receiver.stream.close() }
                    defer { silence.stop() }
                    while let event = await receiver.stream.nextSignal() {
                        silence.heard()
                        let now = monotonicNanoseconds()
                        guard let sequence = integer(after: #""s":"#, in: event.data) else { continue }
                        if event.event == "load-end" { break }
                        guard event.event == "load", let sentAt = integer(after: #""t":"#, in: event.data) else { continue }
                        latencies.record(nanoseconds: now > UInt64(sentAt) ? now - UInt64(sentAt) : 0)
                        if !seen.insert(sequence).inserted {
                            counters.duplicate()
                        } else if sequence != expected {
                            counters.reordered()
                        }
                        expected = sequence + 1
                        counters.delivered()
                    }
                    return latencies
                }
            }
            let progressTask = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(500))
                    let elapsed = Double(monotonicNanoseconds() - start) / 1e9
                    progress.update(String(format: "sent %d, delivered %d (%.0f/s)", counters.sentCount, counters.deliveredCount, Double(counters.deliveredCount) / elapsed))
                }
            }
            var all = Latencies()
            for try await latencies in group { if let latencies { all.add(latencies) } }
            progressTask.cancel()
            return all
        }
        progress.stop()
        let elapsed = min(Double(monotonicNanoseconds() - start), duration * 1e9) / 1e9
        receivers.forEach { $0.stream.close() }
        senders.forEach { $0.stream.close() }

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

/// The integer after the first `key` in `text` (a cheap read of our own compact JSON), found
/// in its UTF-8: Foundation's `range(of:)` was the tool's costliest call per message.
func integer(after key: String, in text: String) -> Int? {
    let bytes = text.utf8
    let pattern = key.utf8
    guard let first = pattern.first else { return nil }
    var from = bytes.startIndex
    while let start = bytes[from...].firstIndex(of: first) {
        guard bytes[start...].starts(with: pattern) else {
            from = bytes.index(after: start)
            continue
        }
        var cursor = bytes.index(start, offsetBy: pattern.count)
        let negative = cursor < bytes.endIndex && bytes[cursor] == UInt8(ascii: "-")
        if negative { cursor = bytes.index(after: cursor) }
        var value = 0
        var digits = 0
        while cursor < bytes.endIndex, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[cursor]) {
            value = value &* 10 &+ Int(bytes[cursor] - UInt8(ascii: "0"))
            digits += 1
            cursor = bytes.index(after: cursor)
        }
        return digits > 0 ? (negative ? -value : value) : nil
    }
    return nil
}

/// Calls `expire` once nothing was `heard` for `limit`: one timer for a whole stream, where a
/// timeout per message (a task group and a sleep each) cost the tool more CPU than the nodes
/// spent on the message.
final class SilenceWatchdog: Sendable {
    private let lastHeard: NIOLockedValueBox<UInt64>
    private let timer: Task<Void, Never>

    init(limit: Duration, expire: @escaping @Sendable () -> Void) {
        let limitNanoseconds = UInt64(limit.components.seconds) * 1_000_000_000 + UInt64(limit.components.attoseconds / 1_000_000_000)
        let lastHeard = NIOLockedValueBox(monotonicNanoseconds())
        self.lastHeard = lastHeard
        timer = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                let last = lastHeard.withLockedValue { $0 }
                if monotonicNanoseconds() > last + limitNanoseconds { return expire() }
            }
        }
    }

    func heard() { lastHeard.withLockedValue { $0 = monotonicNanoseconds() } }

    func stop() { timer.cancel() }
}
