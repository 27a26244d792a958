import Foundation
import RedisClient

/// What an operation costs beyond its latency, summed over windows that hold only it: Redis's
/// publishes and CPU (from `INFO`, which counts the commands scripts run as well) and the
/// nodes' CPU (every thread's time on CPU, from /proc). The `INFO` calls that open and close a
/// window cost Redis a little CPU of their own; `calibrate()` measures empty windows so that
/// the report can take it out.
final class CostMeter {
    private let redis: RedisClient?
    private let pids: [Int32]
    private var baselineRedisSeconds = 0.0
    private(set) var windows = 0
    private(set) var publishes = 0
    private(set) var redisSeconds = 0.0
    private(set) var nodeNanoseconds: UInt64 = 0

    struct Sample {
        var publishes: Int
        var redisSeconds: Double
        var nodeNanoseconds: UInt64
    }

    init(redis: String?, pids: [Int32]) throws {
        self.redis = try redis.map { RedisClient(endpoint: try RedisEndpoint(url: $0)) }
        self.pids = pids
    }

    var isMeasuring: Bool { redis != nil || !pids.isEmpty }

    func sample() async throws -> Sample {
        var sample = Sample(publishes: 0, redisSeconds: 0, nodeNanoseconds: pids.map(Self.cpuNanoseconds).reduce(0, +))
        guard let redis else { return sample }
        let info = try await redis.send(["INFO", "commandstats", "cpu"]).string ?? ""
        for line in info.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("cmdstat_publish:calls=") || line.hasPrefix("cmdstat_spublish:calls=") {
                sample.publishes += Int(line.split(separator: "=")[1].split(separator: ",")[0]) ?? 0
            } else if line.hasPrefix("used_cpu_sys:") || line.hasPrefix("used_cpu_user:") {
                sample.redisSeconds += Double(line.split(separator: ":")[1]) ?? 0
            }
        }
        return sample
    }

    /// Measures `count` empty windows: the meter's own cost, taken out of the figures.
    func calibrate(count: Int = 20) async throws {
        guard redis != nil else { return }
        var total = 0.0
        for _ in 0..<count {
            let start = try await sample()
            total += try await sample().redisSeconds - start.redisSeconds
        }
        baselineRedisSeconds = total / Double(count)
    }

    /// Adds the window from `start` to now.
    func record(since start: Sample) async throws {
        let end = try await sample()
        windows += 1
        publishes += end.publishes - start.publishes
        redisSeconds += end.redisSeconds - start.redisSeconds - baselineRedisSeconds
        nodeNanoseconds += end.nodeNanoseconds - start.nodeNanoseconds
    }

    func reset() {
        (windows, publishes, redisSeconds, nodeNanoseconds) = (0, 0, 0, 0)
    }

    /// Per window: publishes, Redis CPU µs, node CPU µs ("-" for what is not measured).
    var perWindow: [String: Any] {
        guard windows > 0 else { return [:] }
        let n = Double(windows)
        var row: [String: Any] = [:]
        if redis != nil {
            row["publishes"] = String(format: "%.1f", Double(publishes) / n)
            row["redis_cpu_us"] = redisSeconds / n * 1e6
        }
        if !pids.isEmpty { row["node_cpu_us"] = Double(nodeNanoseconds) / n / 1e3 }
        return row
    }

    func close() async { await redis?.close() }

    /// Every thread's time on CPU, from /proc/PID/task/*/schedstat (nanoseconds, its first field).
    static func cpuNanoseconds(_ pid: Int32) -> UInt64 {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.reduce(0) { total, task in
            let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/schedstat", encoding: .utf8)) ?? ""
            return total + (text.split(separator: " ").first.flatMap { UInt64($0) } ?? 0)
        }
    }
}
