/// Whether `POST /access` hands out tokens.
public enum AccessMode: String, Sendable, CaseIterable {
    /// To anyone who asks, for any username: the demo and the original article's client.
    case open
    /// Never (404): tokens come from the application's backend, signed with the fleet's secret.
    case off
}

/// How one node's HTTP side behaves.
public struct NodeConfiguration: Sendable {
    public var access: AccessMode
    public var host: String
    public var port: Int
    /// Time between `ping` events on an idle stream.
    public var pingInterval: Duration
    /// Origins allowed to call the API from a browser; `["*"]` allows any (as the original did).
    public var allowedOrigins: [String]
    /// Largest request body accepted (relay payloads, `/access`).
    public var maxBodyBytes: Int
    /// Relays a peer may send per second on this node (0: no limit), and the burst allowed.
    public var relayRate: Double
    public var relayBurst: Double
    /// Joins a peer may make per second on this node (0: no limit), and the burst allowed.
    public var joinRate: Double
    public var joinBurst: Double

    /// The origins a browser may call from; nil for any (`*` among `allowedOrigins`).
    var originsAllowed: Set<String>? {
        allowedOrigins.contains("*") ? nil : Set(allowedOrigins)
    }

    public init(
        host: String = "127.0.0.1",
        port: Int = 8080,
        pingInterval: Duration = .seconds(10),
        allowedOrigins: [String] = ["*"],
        maxBodyBytes: Int = 64 * 1024,
        relayRate: Double = 100,
        relayBurst: Double = 200,
        joinRate: Double = 10,
        joinBurst: Double = 20,
        access: AccessMode = .open
    ) {
        self.access = access
        self.relayRate = relayRate
        self.relayBurst = relayBurst
        self.joinRate = joinRate
        self.joinBurst = joinBurst
        self.host = host
        self.port = port
        self.pingInterval = pingInterval
        self.allowedOrigins = allowedOrigins
        self.maxBodyBytes = maxBodyBytes
    }
}
