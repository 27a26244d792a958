/// Reading the event logs back: what a resuming client missed, what a stream missed while the
/// node's subscription was down, and what a stream that joined a room must catch up on from
/// the join. The one owner of the rule "nothing is routed without being logged, so the logs
/// fill any gap in what was live".
struct EventLogs: Sendable {
    let context: NodeContext

    /// What a resuming client missed after its `Last-Event-ID`, from its own log and the log of
    /// each room in its cursor; nil if some log no longer holds all of it. Takes up the cursor
    /// on `stream` first, following the rooms the peer may see: those it is in, and those it
    /// left since (their farewells are in what it missed), each read from no earlier than the
    /// join it belongs to. (The id comes from the client: a room it names and was never in is
    /// dropped, and none is read from before the peer joined it.)
    func replay(for stream: PeerStream, resumingFrom cursor: EventCursor, joinedAt: [RoomID: EntryID]) async throws -> [Inbound]? {
        guard let own = try await read(of: stream.user.id, own: cursor.own.entry, rooms: [:]) else { return nil }
        var earliest = joinedAt
        // Rooms left in what the client missed, with the entry their farewells are as of.
        var leaving: [RoomID: EntryID] = [:]
        // A room whose introductions the client saw only part of: the rest come before any
        // later entry of the room (which waits, as it does after a join).
        var introducing: [RoomID: EntryID] = [:]
        for item in own {
            switch item.message {
            case .farewells(let room, let at, let joined, _) where leaving[room] == nil:
                leaving[room] = at
                earliest[room] = joined
            case .introductions(let room, let at, let members) where item.entry == cursor.own.entry:
                if cursor.own.delivered < members.count { introducing[room] = at }
            default:
                break
            }
        }
        let rooms = Dictionary(
            uniqueKeysWithValues: cursor.rooms.compactMap { room, position in earliest[room].map { (room, max(position, $0)) } })
        stream.resume(from: EventCursor(own: cursor.own, rooms: rooms), leaving: leaving, introducing: introducing)
        // (False: the stream ended meanwhile, and what is read goes nowhere.)
        for room in rooms.keys { _ = try await context.subscriber.waitUntilSubscribed(context.keys.channel(room)) }
        guard let missed = try await read(of: stream.user.id, own: nil, rooms: rooms) else { return nil }
        return Self.interleaved(own + missed)
    }

    /// A started stream's logs after its cursor, for the catch-up after the subscription came
    /// back; nil if some log no longer holds all of it.
    func missed(by stream: PeerStream) async throws -> [Inbound]? {
        let cursor = stream.cursor
        return try await read(of: stream.user.id, own: cursor.own.entry, rooms: cursor.rooms).map(Self.interleaved)
    }

    /// Reads a room's log after a stream's join once the node listens on the room's channel,
    /// and hands it to the stream. Through a Redis outage it tries again until Redis is back
    /// (the stream holds meanwhile, as every stream of the node does), for as long as the
    /// stream waits for it; if the log was trimmed past the join, the stream ends and its
    /// client resumes.
    func catchUp(_ request: LocalStreams.RoomCatchUp) async {
        let (stream, room, after) = (request.stream, request.room, request.after)
        var pause = Duration.milliseconds(20)
        while stream.isCatchingUp(in: room, from: after) {
            do {
                // (Not wanted: the stream no longer follows the room, and the loop ends.)
                if try await context.subscriber.waitUntilSubscribed(context.keys.channel(room)) {
                    let call = ReadLogCall(context.keys, peer: stream.user.id, source: .room(room), after: after)
                    guard let entries = call.inbound(try await context.scripts.run(call)) else {
                        context.logger.warning("a room's log was trimmed before a joiner read it", metadata: ["peer": "\(stream.user.id)", "room": "\(room)"])
                        return stream.end(.closed)
                    }
                    return stream.caughtUp(in: room, from: after, with: entries)
                }
            } catch {
                // Redis is away: the subscription comes back with it.
            }
            guard (try? await Task.sleep(for: pause)) != nil else { return }
            pause = min(pause * 2, .seconds(1))
        }
    }

    /// Reads the peer's own log from `own` on (its entry included: it may hold events not all
    /// delivered) and each room's log after its entry, in one round trip; nil if one is trimmed.
    private func read(of peer: PeerID, own: EntryID?, rooms: [RoomID: EntryID]) async throws -> [Inbound]? {
        var calls = rooms.map { ReadLogCall(context.keys, peer: peer, source: .room($0.key), after: $0.value) }
        if let own { calls.append(ReadLogCall(context.keys, peer: peer, source: .own, after: own, including: true)) }
        guard !calls.isEmpty else { return [] }
        var entries: [Inbound] = []
        for (call, reply) in zip(calls, try await context.scripts.run(calls)) {
            guard let read = call.inbound(reply) else { return nil }
            entries += read
        }
        return entries
    }

    /// Entries of several logs in the order Redis wrote them, as near as their ids tell (each
    /// log keeps its own order; the stream orders what depends on another log itself).
    static func interleaved(_ entries: [Inbound]) -> [Inbound] {
        entries.enumerated().sorted { ($0.element.entry, $0.offset) < ($1.element.entry, $1.offset) }.map(\.element)
    }
}
