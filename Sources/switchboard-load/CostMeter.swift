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
    private(set) var redisSeconds = 0.0
    private(set) var nodeNanoseconds: UInt64 = 0
    /// Per command (scripts' own calls included): calls and the µs Redis spent running them.
    private(set) var commands: [String: CommandCost] = [:]

    struct CommandCost {
        var calls = 0
        var microseconds = 0.0
    }

    /// Classic and sharded, scripts' own included.
    var publishes: Int { (commands["publish"]?.calls ?? 0) + (commands["spublish"]?.calls ?? 0) }

    struct Sample {
        var redisSeconds: Double
        var nodeNanoseconds: UInt64
        var commands: [String: CommandCost] = [:]
    }

    init(redis: String?, pids: [Int32]) throws {
        self.redis = try redis.map { RedisClient(endpoint: try RedisEndpoint(url: $0)) }
        self.pids = pids
    }

    var isMeasuring: Bool { redis != nil || !pids.isEmpty }

    func sample() async throws -> Sample {
        var sample = Sample(redisSeconds: 0, nodeNanoseconds: pids.map(Self.cpuNanoseconds).reduce(0, +))
        guard let redis else { return sample }
        let info = try await redis.send(["INFO", "commandstats", "cpu"]).string ?? ""
        for line in info.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("cmdstat_") {
                let name = String(line.dropFirst("cmdstat_".count).prefix { $0 != ":" })
                sample.commands[name] = Self.commandCost(line)
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
        redisSeconds += end.redisSeconds - start.redisSeconds - baselineRedisSeconds
        nodeNanoseconds += end.nodeNanoseconds - start.nodeNanoseconds
        for (name, cost) in end.commands {
            let before = start.commands[name] ?? CommandCost()
            commands[name, default: CommandCost()].calls += cost.calls - before.calls
            commands[name, default: CommandCost()].microseconds += cost.microseconds - before.microseconds
        }
    }

    func reset() {
        (windows, redisSeconds, nodeNanoseconds, commands) = (0, 0, 0, [:])
    }

    /// Per window and command, busiest first: calls and µs spent running them (INFO's own call
    /// left out). Redis's CPU beyond their sum is its event loop: reading, writing, waking.
    var commandsPerWindow: [(command: String, calls: Double, microseconds: Double)] {
        guard windows > 0 else { return [] }
        let n = Double(windows)
        return commands.filter { $0.key != "info" && $0.value.calls > 0 }
            .map { ($0.key, Double($0.value.calls) / n, $0.value.microseconds / n) }
            .sorted { $0.microseconds > $1.microseconds }
    }

    /// "cmdstat_get:calls=3,usec=12,usec_per_call=4.00,…"
    private static func commandCost(_ line: Substring) -> CommandCost {
        var cost = CommandCost()
        for field in line.drop(while: { $0 != ":" }).dropFirst().split(separator: ",") {
            let pair = field.split(separator: "=")
            guard pair.count == 2 else { continue }
            if pair[0] == "calls" { cost.calls = Int(pair[1]) ?? 0 }
            if pair[0] == "usec" { cost.microseconds = Double(pair[1]) ?? 0 }
        }
        return cost
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
