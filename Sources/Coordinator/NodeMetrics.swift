import CoreMetrics
import Foundation
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
        peersReaped = Counter(label: "switchboard_dead_node_peers_removed_total", factory: factory)
    }

    /// Metrics that go nowhere.
    public static let none = NodeMetrics(factory: NOOPMetricsHandler.instance)

    func joined(_ result: String) { Counter(label: "switchboard_joins_total", dimensions: [("result", result)], factory: factory).increment() }
    func left(_ result: String) { Counter(label: "switchboard_leaves_total", dimensions: [("result", result)], factory: factory).increment() }
    /// A request refused by a limit: `join_rate`, `relay_rate`, `room_full`, `too_many_rooms`.
    public func refused(_ limit: String) { Counter(label: "switchboard_refused_total", dimensions: [("limit", limit)], factory: factory).increment() }
    func relayed(_ result: String) { Counter(label: "switchboard_relays_total", dimensions: [("result", result)], factory: factory).increment() }

    func scriptDuration(_ script: String, since start: ContinuousClock.Instant) {
        CoreMetrics.Timer(label: "switchboard_script_duration_seconds", dimensions: [("script", script)], factory: factory)
            .recordInterval(since: start)
    }

    /// Counts what happens to a Redis connection (pass to `RedisClient(onConnectionEvent:)`).
    public func redisConnectionEvent(_ event: RedisClient.ConnectionEvent) {
        switch event {
        case .restored: redisReconnects.increment()
        case .lost, .connectFailed: redisConnectionErrors.increment()
        }
    }

    /// Events written to streams (the HTTP layer counts them as it writes).
    public func sentEvents(_ count: Int) { eventsSent.increment(by: count) }
}

extension CoreMetrics.Timer {
    func recordInterval(since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }
}
