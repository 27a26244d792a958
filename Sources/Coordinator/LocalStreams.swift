import NIOConcurrencyHelpers
import NIOCore
import RedisClient

/// The streams this node holds, by peer and by room followed, and the routing of subscriber
/// messages to them. Normally one stream per peer; two while a newer stream waits for Redis to
/// confirm that it replaces the older.
///
/// A stream follows a room from its introductions to its farewells (or its end): the node
/// listens on the room's channel while at least one of its streams follows the room, and the
/// stream tells it so under its own lock, so a join and a leave of one stream stay in order.
/// What a stream needs to read from a room's log when it joins goes to `catchUps`.
final class LocalStreams: RoomFeedObserver {
    private let keys: KeySpace
    private let subscriberBox = NIOLockedValueBox<RedisSubscriber?>(nil)
    private let streams = NIOLockedValueBox<[PeerID: [PeerStream]]>([:])
    private let followers = NIOLockedValueBox<[RoomID: [ObjectIdentifier: PeerStream]]>([:])
    /// Streams that joined a room and must read its log from the join on.
    let catchUps: AsyncStream<RoomCatchUp>
    private let catchUpSink: AsyncStream<RoomCatchUp>.Continuation

    struct RoomCatchUp: Sendable {
        let stream: PeerStream
        let room: RoomID
        let after: EntryID
    }

    init(keys: KeySpace) {
        self.keys = keys
        (catchUps, catchUpSink) = AsyncStream.makeStream()
    }

    /// The node's subscriber, made after this since it routes here.
    func attach(_ subscriber: RedisSubscriber) {
        subscriberBox.withLockedValue { $0 = subscriber }
    }

    private func subscriber() -> RedisSubscriber? { subscriberBox.withLockedValue { $0 } }

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

    // MARK: Following rooms

    // The subscription is taken and given back under the followers' lock: a follow and an
    // unfollow of one room by two streams then reach the subscriber in the order they were
    // counted, so the channel is wanted exactly while some stream follows the room.
    func stream(_ stream: PeerStream, follows room: RoomID) {
        followers.withLockedValue { followers in
            guard followers[room, default: [:]].updateValue(stream, forKey: ObjectIdentifier(stream)) == nil, followers[room]!.count == 1
            else { return }
            subscriber()?.retain(keys.channel(room))
        }
    }

    func stream(_ stream: PeerStream, unfollows room: RoomID) {
        followers.withLockedValue { followers in
            guard followers[room]?.removeValue(forKey: ObjectIdentifier(stream)) != nil, followers[room]!.isEmpty else { return }
            followers[room] = nil
            subscriber()?.unsubscribe(keys.channel(room))
        }
    }

    func stream(_ stream: PeerStream, catchesUpIn room: RoomID, after position: EntryID) {
        catchUpSink.yield(RoomCatchUp(stream: stream, room: room, after: position))
    }

    // MARK: Routing

    /// Called on the subscriber's event loop for each message: a peer's channel carries its
    /// own log's entries and `!session` (where its newest stream begins), a room's channel its
    /// log's entries.
    func route(_ message: PubSubMessage) {
        guard let owner = keys.owner(ofChannel: message.channel), let decoded = ChannelMessage(message.payload) else { return }
        switch (owner, decoded) {
        case (.peer(let peer), .session(let session)):
            for stream in streams.withLockedValue({ $0[peer] ?? [] }) {
                if stream.session == session { stream.confirm() } else { stream.end(.replaced) }
            }
        case (.peer(let peer), .entry(let entry, let logMessage)):
            let item = Inbound(source: .own, entry: entry, message: logMessage)
            for stream in streams.withLockedValue({ $0[peer] ?? [] }) { stream.deliver(item) }
        case (.room(let room), .entry(let entry, let logMessage)):
            let item = Inbound(source: .room(room), entry: entry, message: logMessage)
            for stream in followers.withLockedValue({ $0[room].map { Array($0.values) } ?? [] }) { stream.deliver(item) }
        case (.room, .session):
            break
        }
    }
}
