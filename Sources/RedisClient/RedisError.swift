/// An error reply sent by the server (`-ERR ...`, `-NOSCRIPT ...`): the command reached Redis
/// and Redis refused it. The connection is still good.
public struct RedisServerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The whole error line, e.g. `NOSCRIPT No matching script. Please use EVAL.`
    public let message: String

    public init(_ message: String) { self.message = message }

    /// The first word of the message, by Redis convention the error kind: `ERR`, `NOSCRIPT`, `WRONGTYPE`…
    public var code: Substring { message.prefix { $0 != " " } }

    public var description: String { "Redis error: \(message)" }

    /// A refusal that passes by itself: the server is loading its data, its primary is down,
    /// it was just demoted to a replica, or a cluster slot is moving or down.
    public var isTransient: Bool { ["LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN"].contains(code) }
}

/// The command may not have reached Redis, or its reply was lost: the connection is gone or unusable.
public enum RedisConnectionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Could not open the connection (refused, unreachable, timed out, AUTH/SELECT refused).
    case connectFailed(String)
    /// The connection closed before the reply arrived.
    case connectionClosed
    /// The last attempt failed recently; the client will try again after its back-off.
    case unavailable(retryAfterMilliseconds: Int)
    /// The server's bytes are not valid RESP; the connection was closed.
    case protocolError(String)
    /// No reply within the command time-out; the connection was closed.
    case timeout

    public var description: String {
        switch self {
        case .connectFailed(let why): "cannot connect to Redis: \(why)"
        case .connectionClosed: "Redis connection closed"
        case .unavailable(let ms): "Redis unavailable (next attempt in \(ms) ms)"
        case .protocolError(let why): "Redis protocol error: \(why)"
        case .timeout: "Redis command timed out"
        }
    }
}

/// What happened to a connection, for metrics.
public enum RedisConnectionEvent: Sendable {
    /// A connection opened after a failure or a loss.
    case restored
    /// An open connection closed unexpectedly.
    case lost
    /// An attempt to connect failed.
    case connectFailed
}

/// Who a server is, as `INFO` says when a connection opens: a restart gives it a new run id, a
/// promotion (a replica taking over) a new replication id. Either may mean that writes were
/// lost, so the caller puts back what it holds there.
public struct ServerIdentity: Sendable, Equatable {
    public var runID: String
    public var replicationID: String
    /// The replication id it had before it was last promoted; all zeros if it never was.
    public var previousReplicationID: String
    public var isPrimary: Bool

    /// Whether this server was a replica once and was promoted.
    public var wasPromoted: Bool { previousReplicationID.contains { $0 != "0" } }

    /// Reads `INFO server replication`; nil if a field is missing.
    init?(info: String) {
        var fields: [Substring: Substring] = [:]
        for line in info.split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon]] = line[line.index(after: colon)...]
        }
        guard let runID = fields["run_id"], let replicationID = fields["master_replid"], let role = fields["role"] else { return nil }
        self.runID = String(runID)
        self.replicationID = String(replicationID)
        self.previousReplicationID = String(fields["master_replid2"] ?? "")
        self.isPrimary = role == "master"
    }
}
