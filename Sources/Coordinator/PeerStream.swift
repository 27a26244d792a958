import NIOCore
import Synchronization

/// One event for a peer's stream: an SSE event name and its JSON data, ready to frame.
public struct StreamEvent: Sendable {
    public let name: String
    public let data: ByteBuffer

    public init(name: String, data: ByteBuffer) {
        self.name = name
        self.data = data
    }
}

/// A peer's open event stream on this node. Receives what Redis routes to the peer once Redis
/// has confirmed it as the peer's current stream, and ends when a newer stream replaces it,
/// when its reader falls too far behind, or when the node closes it.
public final class PeerStream: Sendable {
    public let user: PeerUser
    /// Unique per stream; Redis records which one is the peer's current stream.
    public let session: String
    public let events: AsyncStream<StreamEvent>
    private let sink: AsyncStream<StreamEvent>.Continuation
    private let state = Mutex(State.waitingForConfirmation)

    enum State { case waitingForConfirmation, live, ended(EndReason) }

    public enum EndReason: Sendable, Equatable {
        case replaced, tooSlow, closed
    }

    init(user: PeerUser, session: String, bufferLimit: Int) {
        self.user = user
        self.session = session
        (events, sink) = AsyncStream.makeStream(of: StreamEvent.self, bufferingPolicy: .bufferingOldest(bufferLimit))
    }

    /// Why the stream ended, or nil while it is open.
    public var endReason: EndReason? {
        state.withLock { if case .ended(let reason) = $0 { reason } else { nil } }
    }

    /// Redis confirmed this stream as the peer's current one: deliver from now on.
    func confirm() {
        state.withLock { if case .waitingForConfirmation = $0 { $0 = .live } }
    }

    /// Delivers a routed event if the stream is live. A reader too slow to keep up with its
    /// buffer is cut off rather than let the node's memory grow.
    func deliver(_ event: StreamEvent) {
        guard state.withLock({ if case .live = $0 { true } else { false } }) else { return }
        if case .dropped = sink.yield(event) { end(.tooSlow) }
    }

    /// Adds an event made by this node (e.g. `ping`), not routed through Redis.
    public func send(_ event: StreamEvent) {
        if case .dropped = sink.yield(event) { end(.tooSlow) }
    }

    public func end(_ reason: EndReason) {
        let first = state.withLock { state in
            if case .ended = state { return false }
            state = .ended(reason)
            return true
        }
        if first { sink.finish() }
    }
}
