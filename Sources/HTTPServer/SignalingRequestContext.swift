import Hummingbird
import NIOCore

/// The request context of every route: Hummingbird's basics plus the connection's channel, so
/// the node can close a stream's connection even while a write to it is stuck.
public struct SignalingRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}
