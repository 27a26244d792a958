import NIOConcurrencyHelpers
import NIOCore
import RedisClient

/// The streams this node holds, by peer, and the routing of subscriber messages to them.
/// Normally one stream per peer; two while a newer stream waits for Redis to confirm that it
/// replaces the older.
final class LocalStreams: Sendable {
    private let keys: KeySpace
    private let streams = NIOLockedValueBox<[PeerID: [PeerStream]]>([:])

    init(keys: KeySpace) {
        self.keys = keys
    }

    func add(_ stream: PeerStream) {
        streams.withLockedValue { $0[stream.user.id, default: []].append(stream) }
    }

    func remove(_ stream: PeerStream) {
        streams.withLockedValue { streams in
            streams[stream.user.id]?.removeAll { $0 === stream }
            if streams[stream.user.id]?.isEmpty == true { streams[stream.user.id] = nil }
        }
    }

    var count: Int { streams.withLockedValue { $0.values.reduce(0) { $0 + $1.count } } }

    /// Every stream, for events the node itself sends to all (pings).
    var all: [PeerStream] { streams.withLockedValue { $0.values.flatMap { $0 } } }

    /// Called on the subscriber's event loop for each message. Payloads are
    /// `<event>\n<room>=<log position>\n<JSON>` (no room for a relay, from the peer's own log),
    /// or `!session\n<id>` marking where a peer's new stream begins.
    func route(_ message: PubSubMessage) {
        guard let peer = keys.peer(onChannel: message.channel) else { return }
        var payload = message.payload
        guard let name = payload.readLine() else { return }
        let local = streams.withLockedValue { $0[peer] ?? [] }
        if name == "!session" {
            let session = String(buffer: payload)
            for stream in local {
                if stream.session == session { stream.confirm() } else { stream.end(.replaced) }
            }
            return
        }
        guard let origin = payload.readLine(), let equals = origin.firstIndex(of: "="),
            let position = LogPosition(origin[origin.index(after: equals)...])
        else { return }
        let source = equals == origin.startIndex ? nil : RoomID(origin[..<equals])
        let event = RoutedEvent(name: name, source: source, position: position, data: payload)
        for stream in local { stream.deliver(event) }
    }
}

extension ByteBuffer {
    /// Reads up to the next LF and skips it; nil if there is none.
    fileprivate mutating func readLine() -> String? {
        guard let newline = readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        defer { moveReaderIndex(forwardBy: 1) }
        return readString(length: newline - readerIndex)
    }
}
