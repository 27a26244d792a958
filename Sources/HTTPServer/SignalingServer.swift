import Coordinator
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle

/// Builds the HTTP application of one node.
public enum SignalingServer {
    public static func makeApplication(
        coordinator: Coordinator,
        tokens: TokenAuthority,
        configuration: NodeConfiguration,
        metricsRegistry: PrometheusCollectorRegistry? = nil,
        logger: Logger = Logger(label: "switchboard.http"),
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = Router(context: BasicRequestContext.self)
        let originsAllowed = configuration.originsAllowed
        let answers = DirectAnswers(allowedOrigins: originsAllowed)
        if originsAllowed != nil {
            router.add(middleware: OriginFilter(answers: answers))
        }
        router.add(
            middleware: CORSMiddleware(
                allowOrigin: originsAllowed == nil ? .all : .originBased,
                allowHeaders: [.accept, .authorization, .contentType, HTTPField.Name("Last-Event-ID")!],
                allowMethods: [.get, .post, .options],
                maxAge: .seconds(600)))
        let relays = RelayEndpoint(coordinator: coordinator, tokens: tokens, configuration: configuration, logger: logger)
        SignalingAPI(coordinator: coordinator, tokens: tokens, configuration: configuration, metricsRegistry: metricsRegistry, relays: relays)
            .addRoutes(to: router)
        let eventStreams = EventStreamEndpoint(
            coordinator: coordinator, tokens: tokens, answers: answers, logger: logger)
        return Application(
            router: router,
            server: HTTPServerBuilder { responder in
                SignalingChannel(http1: HTTP1Channel(responder: responder), endpoint: eventStreams, relays: relays)
            },
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: DirectAnswers.serverName),
            // Stopped in reverse order: the server (which ends the streams), then the drain.
            services: [PingService(coordinator: coordinator, interval: configuration.pingInterval), StreamDrain(coordinator: coordinator)],
            onServerRunning: onServerRunning,
            logger: logger)
    }
}

/// Sends `ping` to every stream of the node each interval: one timer for the node, not one
/// per stream. Pings go through each stream's queue, so they never split a frame.
struct PingService: Service {
    let coordinator: Coordinator
    let interval: Duration

    func run() async throws {
        let ping = StreamEvent(name: "ping", data: ByteBuffer(string: "{}"))
        // Shutdown cancels the sleep; that is the normal end, not an error.
        await cancelWhenGracefulShutdown {
            while (try? await Task.sleep(for: interval)) != nil {
                coordinator.sendToAllStreams(ping)
            }
        }
    }
}

/// Waits, as the node stops, until every stream the server ended has closed its session. The
/// server's own shutdown waits for its connections' tasks, and a stream has none
/// (`EventStreamHandler`); the coordinator, stopped next, must not go while streams still
/// close through it.
struct StreamDrain: Service {
    let coordinator: Coordinator
    /// A stream's last bytes get `finalWriteDeadline` before it is reset, then its session closes.
    static let limit = Duration.seconds(10)

    func run() async throws {
        try? await gracefulShutdown()
        let deadline = ContinuousClock.now + Self.limit
        while coordinator.openStreamCount > 0, ContinuousClock.now < deadline, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
