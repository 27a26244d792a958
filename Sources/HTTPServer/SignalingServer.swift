import Coordinator
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// Builds the HTTP application of one node.
public enum SignalingServer {
    public static func makeApplication(
        coordinator: Coordinator,
        tokens: TokenAuthority,
        configuration: NodeConfiguration,
        logger: Logger = Logger(label: "switchboard.http"),
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = Router()
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
        SignalingAPI(coordinator: coordinator, tokens: tokens, configuration: configuration)
            .addRoutes(to: router)
        return Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "switchboard"),
            onServerRunning: onServerRunning,
            logger: logger)
    }
}
