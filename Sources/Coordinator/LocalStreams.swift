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
/// A stream that joins a room catches up from the room's latest entries as they came on its
/// channel (`RecentRoomEntries`), or, if those do not reach back to its join, from the room's
/// log: what it must read goes to `catchUps`.
final class LocalStreams: RoomFeedObserver {
    private let keys: KeySpace
    private let subscriberBox = NIOLockedValueBox<RedisSubscriber?>(nil)
    private let streams = NIOLockedValueBox<[PeerID: [PeerStream]]>([:])
    private let followed = NIOLockedValueBox<[RoomID: FollowedRoom]>([:])
    /// Streams that joined a room and must read its log from the join on.
    let catchUps: AsyncStream<RoomCatchUp>
    private let catchUpSink: AsyncStream<RoomCatchUp>.Continuation

    private struct FollowedRoom {
        var streams: [ObjectIdentifier: PeerStream] = [:]
        var recent = RecentRoomEntries()
    }

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
        followed.withLockedValue { followed in
            guard followed[room, default: FollowedRoom()].streams.updateValue(stream, forKey: ObjectIdentifier(stream)) == nil,
                followed[room]!.streams.count == 1
            else { return }
            subscriber()?.retain(keys.channel(room))
        }
    }

    func stream(_ stream: PeerStream, unfollows room: RoomID) {
        followed.withLockedValue { followed in
            guard followed[room]?.streams.removeValue(forKey: ObjectIdentifier(stream)) != nil, followed[room]!.streams.isEmpty
            else { return }
            followed[room] = nil
            subscriber()?.unsubscribe(keys.channel(room))
        }
    }

    // Called after `follows`: an entry routed before the stream was counted is in the recent
    // entries read here; one routed after goes to the stream as well (which drops a repeat).
    func stream(_ stream: PeerStream, catchesUpIn room: RoomID, after position: EntryID) {
        if let entries = followed.withLockedValue({ $0[room]?.recent.entries(after: position) }) {
            return stream.caughtUp(in: room, from: position, with: entries)
        }
        catchUpSink.yield(RoomCatchUp(stream: stream, room: room, after: position))
    }

    /// The channels `stream` listens on: its peer's, and those of the rooms it follows.
    func channels(of stream: PeerStream) -> [String] {
        let rooms = followed.withLockedValue { followed in
            followed.compactMap { room, followers in followers.streams[ObjectIdentifier(stream)] == nil ? nil : room }
        }
        return [keys.channel(stream.user.id)] + rooms.map(keys.channel)
    }

    /// The streams that listen on a channel of `shard`: those to hold when messages there may
    /// have been missed.
    func streams(listeningOn shard: RedisSubscriber.Shard) -> [PeerStream] {
        guard let subscriber = subscriber() else { return all }
        var affected: [ObjectIdentifier: PeerStream] = [:]
        followed.withLockedValue { followed in
            for (room, followers) in followed where subscriber.shard(of: keys.channel(room)) == shard {
                affected.merge(followers.streams) { stream, _ in stream }
            }
        }
        for stream in all where subscriber.shard(of: keys.channel(stream.user.id)) == shard {
            affected[ObjectIdentifier(stream)] = stream
        }
        return Array(affected.values)
    }

    /// The subscription broke (its connection is gone): the recent entries may miss some now.
    func subscriptionBroke() {
        followed.withLockedValue { followed in
            for room in followed.keys { followed[room]!.recent.forget() }
        }
    }

    /// Lets go of recent entries too old to be asked for (called now and then).
    func pruneRecentEntries() {
        let now = NIODeadline.now()
        followed.withLockedValue { followed in
            for room in followed.keys { followed[room]!.recent.prune(now: now) }
        }
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
            let followers = followed.withLockedValue { followed -> [PeerStream] in
                guard followed[room] != nil else { return [] }
                // Asked under the followers' lock: an unfollow and a new follow of the room
                // (a new subscription) cannot come between the answer and the record.
                let unbroken = subscriber()?.isConfirmed(message.channel) ?? false
                followed[room]!.recent.record(item, unbroken: unbroken)
                return Array(followed[room]!.streams.values)
            }
            for stream in followers { stream.deliver(item) }
        case (.room, .session):
            break
        }
    }
}
