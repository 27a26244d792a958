import Logging
import RedisClient

/// What every part of a node's coordination shares, none of it mutable: who the node is, its
/// Redis connections, the names of keys and channels, the scripts, metrics and the log limits.
struct NodeContext: Sendable {
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
}
