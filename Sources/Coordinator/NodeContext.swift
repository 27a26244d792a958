import Logging
import RedisClient

/// What every part of a node's coordination shares, none of it mutable: who the node is, its
/// Redis connections, the names of keys and channels, the scripts, metrics and the log limits.
///
/// A class, shared, not a struct copied into each part: with Swift 6.3.1 the struct made a
/// release build corrupt its heap at start-up every time (a double free; debug builds were
/// fine), as `Synchronization.Mutex` once did at shutdown (see the README's design section).
final class NodeContext: Sendable {
    let nodeID: String
    let keys: KeySpace
    let redis: RedisClient
    let subscriber: RedisSubscriber
    let scripts: ScriptRegistry
    let metrics: NodeMetrics
    let logger: Logger
    /// How long event logs are kept: the grace period plus a minute for readers that were
    /// behind when they dropped.
    let logLimits: EventLogLimits

    init(
        nodeID: String, keys: KeySpace, redis: RedisClient, subscriber: RedisSubscriber, scripts: ScriptRegistry, metrics: NodeMetrics,
        logger: Logger, logLimits: EventLogLimits
    ) {
        self.nodeID = nodeID
        self.keys = keys
        self.redis = redis
        self.subscriber = subscriber
        self.scripts = scripts
        self.metrics = metrics
        self.logger = logger
        self.logLimits = logLimits
    }
}
