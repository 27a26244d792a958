import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import RedisClient

/// The node's metrics, through swift-metrics (Prometheus in `switchboard serve`). Each node
/// gets its own factory, so several nodes in one process (tests) keep separate figures.
public final class NodeMetrics: Sendable {
    let streamsOpen: Meter
    let localRooms: Gauge
    let localMemberships: Gauge
    private let factory: MetricsFactory
    let slowClientsDropped: Counter
    let eventsSent: Counter
    let redisReconnects: Counter
    let redisConnectionErrors: Counter
    let redisServerErrors: Counter
    let peersReaped: Counter
    let eventsReplayed: Counter
    let sessionsReasserted: Counter
    let subscriptionProbesFailed: Counter
    private let labelled = NIOLockedValueBox(Labelled())

    private struct Labelled {
        var counters: [String: Counter] = [:]
        var timers: [String: CoreMetrics.Timer] = [:]
    }

    public init(factory: MetricsFactory) {
        self.factory = factory
        streamsOpen = Meter(label: "switchboard_streams_open", factory: factory)
        localRooms = Gauge(label: "switchboard_local_rooms", factory: factory)
        localMemberships = Gauge(label: "switchboard_local_room_members", factory: factory)
        slowClientsDropped = Counter(label: "switchboard_slow_clients_dropped_total", factory: factory)
        eventsSent = Counter(label: "switchboard_events_sent_total", factory: factory)
        redisReconnects = Counter(label: "switchboard_redis_reconnects_total", factory: factory)
        redisConnectionErrors = Counter(label: "switchboard_redis_connection_errors_total", factory: factory)
        redisServerErrors = Counter(label: "switchboard_redis_server_errors_total", factory: factory)
        eventsReplayed = Counter(label: "switchboard_events_replayed_total", factory: factory)
        sessionsReasserted = Counter(label: "switchboard_sessions_reasserted_total", factory: factory)
        subscriptionProbesFailed = Counter(label: "switchboard_subscription_probes_failed_total", factory: factory)
        peersReaped = Counter(label: "switchboard_dead_node_peers_removed_total", factory: factory)
    }

    /// Metrics that go nowhere.
    public static let none = NodeMetrics(factory: NOOPMetricsHandler.instance)

    func joined(_ result: String) { counter("switchboard_joins_total", "result", result).increment() }
    func left(_ result: String) { counter("switchboard_leaves_total", "result", result).increment() }
    /// A request refused by a limit: `join_rate`, `relay_rate`, `room_full`, `too_many_rooms`.
    public func refused(_ limit: String) { counter("switchboard_refused_total", "limit", limit).increment() }
    /// How a stream that came with `Last-Event-ID` started: `resumed`, `expired` (no session
    /// left) or `incomplete` (the logs no longer held everything missed).
    public func resumed(_ result: String) { counter("switchboard_resumes_total", "result", result).increment() }
    func relayed(_ result: String) { counter("switchboard_relays_total", "result", result).increment() }

    func scriptDuration(_ script: String, since start: ContinuousClock.Instant) {
        let timer = labelled.withLockedValue { handles in
            if let timer = handles.timers[script] { return timer }
            let timer = CoreMetrics.Timer(label: "switchboard_script_duration_seconds", dimensions: [("script", script)], factory: factory)
            handles.timers[script] = timer
            return timer
        }
        timer.recordNanoseconds((ContinuousClock.now - start).inNanoseconds)
    }

    /// The counter for one label value, made on first use and kept: these run per request.
    private func counter(_ name: String, _ label: String, _ value: String) -> Counter {
        labelled.withLockedValue { handles in
            let key = name + "\u{0}" + value
            if let counter = handles.counters[key] { return counter }
            let counter = Counter(label: name, dimensions: [(label, value)], factory: factory)
            handles.counters[key] = counter
            return counter
        }
    }

    /// Counts what happens to a Redis connection (pass to `RedisClient(onConnectionEvent:)`).
    public func redisConnectionEvent(_ event: RedisConnectionEvent) {
        switch event {
        case .restored: redisReconnects.increment()
        case .lost, .connectFailed: redisConnectionErrors.increment()
        }
    }

    /// Events written to streams (the HTTP layer counts them as it writes).
    public func sentEvents(_ count: Int) { eventsSent.increment(by: count) }
}
