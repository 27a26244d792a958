/// How one node's HTTP side behaves.
public struct NodeConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Time between `ping` events on an idle stream.
    public var pingInterval: Duration
    /// Origins allowed to call the API from a browser; `["*"]` allows any (as the original did).
    public var allowedOrigins: [String]
    /// Largest request body accepted (relay payloads, `/access`).
    public var maxBodyBytes: Int

    public init(
        host: String = "127.0.0.1",
        port: Int = 8080,
        pingInterval: Duration = .seconds(10),
        allowedOrigins: [String] = ["*"],
        maxBodyBytes: Int = 64 * 1024
    ) {
        self.host = host
        self.port = port
        self.pingInterval = pingInterval
        self.allowedOrigins = allowedOrigins
        self.maxBodyBytes = maxBodyBytes
    }
}
