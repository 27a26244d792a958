import Coordinator
import HTTPTypes
import Hummingbird
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
        let router = Router(context: SignalingRequestContext.self)
        let allowsAnyOrigin = configuration.allowedOrigins.contains("*")
        if !allowsAnyOrigin {
            router.add(middleware: OriginFilter(allowed: Set(configuration.allowedOrigins)))
        }
        router.add(
            middleware: CORSMiddleware(
                allowOrigin: allowsAnyOrigin ? .all : .originBased,
                allowHeaders: [.accept, .authorization, .contentType, HTTPField.Name("Last-Event-ID")!],
                allowMethods: [.get, .post, .options],
                maxAge: .seconds(600)))
        SignalingAPI(coordinator: coordinator, tokens: tokens, configuration: configuration, metricsRegistry: metricsRegistry)
            .addRoutes(to: router)
        return Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "switchboard"),
            services: [PingService(coordinator: coordinator, interval: configuration.pingInterval)],
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
