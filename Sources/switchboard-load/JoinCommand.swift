import ArgumentParser
import Foundation
import SignalingClient

struct JoinCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "join",
        abstract: "Time from POST join until the joiner, and then every member, has its add-peer, by room size.")

    @OptionGroup var options: FleetOptions
    @Option(help: "Room sizes after the join, comma-separated.") var sizes = "2,10,100"
    @Option(help: "Joins measured per size (each by a fresh peer, which then leaves and disconnects).") var repetitions = 30
    @Option(help: "Seconds to wait for an expected event.") var timeout = 10.0
    @Option(help: "The fleet's Redis URL: also report publishes and Redis CPU per join.") var redis: String?
    @Option(name: .customLong("pid"), help: "A node's process id: also report node CPU per join (repeat per node).") var pids: [Int32] = []
    @Flag(help: "With --redis: also report, per join, each command's calls and the time Redis spent running it.") var commandCosts = false

    func run() async throws {
        let nodes = try options.fleet()
        let roomSizes = sizes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !roomSizes.isEmpty, roomSizes.allSatisfy({ $0 >= 2 }) else { throw ValidationError("sizes must be numbers ≥ 2") }
        let wait = Duration.milliseconds(Int(timeout * 1000))
        let meter = try CostMeter(redis: redis, pids: pids)
        try await meter.calibrate()
        var report = Report(
            title: "join: \(repetitions) joins per room size over \(nodes.count) node(s); ms from POST until…"
                + (meter.isMeasuring ? "; per join, from POST until every member has its add-peer:" : ""),
            columns: ["size", "joiner_p50_ms", "joiner_p99_ms", "all_p50_ms", "all_p99_ms", "all_max_ms", "missing"]
                + (meter.isMeasuring ? ["publishes", "redis_cpu_us", "node_cpu_us"] : []))
        var commandReport = Report(
            title: "join: per join, Redis commands (scripts' calls included) and µs spent running them",
            columns: ["size", "command", "calls", "usec"])
        let progress = Progress()
        progress.start("join")
        for size in roomSizes {
            let room = "join-\(size)-\(UUID().uuidString.prefix(8))"
            let members = try await Peer.connectMany(size - 1, nodes: nodes, prefix: "member")
            for (index, member) in members.enumerated() {
                _ = try await member.post("/\(room)/join", via: member.node)
                _ = await drain(member, count: index, wait: wait)  // its add-peer for each earlier member
            }
            for index in members.indices { _ = await drain(members[index], count: size - 2 - index, wait: wait) }
            var joinerTimes = Latencies()
            var allTimes = Latencies()
            var missing = 0
            meter.reset()
            for repetition in 0..<repetitions {
                let joiner = try await Peer.connect(name: "joiner", node: nodes[repetition % nodes.count])
                let via = nodes[(repetition + 1) % nodes.count]
                let costs = try await meter.sample()
                let start = monotonicNanoseconds()
                async let posted = joiner.post("/\(room)/join", via: via)
                // (is the joiner, when its last expected add-peer arrived)
                let arrivals = await withTaskGroup(of: (Bool, UInt64?).self) { group in
                    group.addTask { (true, await drain(joiner, count: size - 1, wait: wait)) }
                    for member in members { group.addTask { (false, await drain(member, count: 1, wait: wait)) } }
                    return await group.reduce(into: [(Bool, UInt64?)]()) { $0.append($1) }
                }
                _ = try await posted
                if meter.isMeasuring { try await meter.record(since: costs) }
                if let joinerDone = arrivals.first(where: { $0.0 })?.1 { joinerTimes.record(nanoseconds: joinerDone - start) }
                let times = arrivals.compactMap(\.1)
                if times.count == arrivals.count {
                    allTimes.record(nanoseconds: times.max()! - start)
                } else {
                    missing += arrivals.count - times.count
                }
                // The joiner leaves and goes away; every member is told at once. (A stream that
                // just ends keeps its rooms for the server's grace period, for a resume.)
                _ = try await joiner.post("/\(room)/leave", via: via)
                joiner.stream.close()
                for member in members { _ = await drain(member, count: 1, wait: wait) }
                progress.update("size \(size): \(repetition + 1)/\(repetitions)")
            }
            members.forEach { $0.stream.close() }
            for cost in meter.commandsPerWindow {
                commandReport.rows.append(["size": size, "command": cost.command, "calls": cost.calls, "usec": cost.microseconds])
            }
            report.rows.append([
                "size": size, "joiner_p50_ms": joinerTimes.milliseconds(at: 50), "joiner_p99_ms": joinerTimes.milliseconds(at: 99),
                "all_p50_ms": allTimes.milliseconds(at: 50), "all_p99_ms": allTimes.milliseconds(at: 99),
                "all_max_ms": allTimes.milliseconds(at: 100), "missing": missing,
            ].merging(meter.perWindow) { $1 })
        }
        progress.stop()
        await meter.close()
        report.print(json: options.json)
        if commandCosts { commandReport.print(json: options.json) }
    }

    /// Reads `count` add-peer / remove-peer events; returns when the last arrived, or nil if
    /// they did not all come within `wait` (the stream is then closed).
    private func drain(_ peer: Peer, count: Int, wait: Duration) async -> UInt64? {
        let stream = peer.stream
        let watchdog = Task {
            try await Task.sleep(for: wait)
            stream.close()
        }
        defer { watchdog.cancel() }
        var last = monotonicNanoseconds()
        var seen = 0
        while seen < count {
            guard let event = await stream.nextSignal() else { return nil }
            if event.event == "add-peer" || event.event == "remove-peer" {
                seen += 1
                last = monotonicNanoseconds()
            }
        }
        return last
    }
}
