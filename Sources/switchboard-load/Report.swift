import Foundation
import Histogram

/// The results of one run: rows of named values, printed as a table or as JSON.
struct Report {
    var title: String
    var columns: [String]
    var rows: [[String: Any]] = []

    func print(json: Bool) {
        if json {
            let object: [String: Any] = ["mode": title, "results": rows]
            let data = try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            Swift.print(String(decoding: data, as: UTF8.self))
            return
        }
        Swift.print("\n\(title)")
        let cells = rows.map { row in columns.map { Self.format(row[$0]) } }
        let widths = columns.indices.map { i in max(columns[i].count, cells.map { $0[i].count }.max() ?? 0) }
        func line(_ values: [String]) -> String {
            zip(values, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
        }
        Swift.print(line(columns))
        Swift.print(line(widths.map { String(repeating: "-", count: $0) }))
        cells.forEach { Swift.print(line($0)) }
    }

    private static func format(_ value: Any?) -> String {
        switch value {
        case let double as Double: String(format: double < 10 ? "%.3f" : "%.1f", double)
        case let value?: "\(value)"
        case nil: "-"
        }
    }
}

/// Latencies in microseconds, reported in milliseconds.
struct Latencies {
    private(set) var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)

    mutating func record(nanoseconds: UInt64) { histogram.record(max(1, nanoseconds / 1000)) }
    mutating func add(_ other: Latencies) { histogram.add(other.histogram) }

    var count: UInt64 { histogram.totalCount }

    func milliseconds(at percentile: Double) -> Double {
        count == 0 ? .nan : Double(histogram.valueAtPercentile(percentile)) / 1000
    }

    var summary: [String: Any] {
        ["p50_ms": milliseconds(at: 50), "p90_ms": milliseconds(at: 90), "p99_ms": milliseconds(at: 99),
         "max_ms": count == 0 ? Double.nan : Double(histogram.max) / 1000]
    }
}

/// A line on stderr, rewritten every second while a run goes on.
final class Progress: @unchecked Sendable {
    private let lock = NSLock()
    private var text = ""
    private var task: Task<Void, Never>?

    func start(_ label: String) {
        let start = ContinuousClock.now
        task = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let elapsed = ContinuousClock.now - start
                let line = lock.withLock { text }
                FileHandle.standardError.write(Data("\r[\(label) \(elapsed.formatted(.units(allowed: [.seconds], fractionalPart: .show(length: 0))))] \(line)\u{1B}[K".utf8))
            }
        }
    }

    func update(_ line: String) { lock.withLock { text = line } }

    func stop() {
        task?.cancel()
        FileHandle.standardError.write(Data("\n".utf8))
    }
}

/// Monotonic nanoseconds, the same clock in every process of the machine.
func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}
