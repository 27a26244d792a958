@testable import Coordinator
import NIOCore
import Testing

/// How a stream orders what reaches it from its own log and its rooms' logs, without Redis:
/// the orders a node can see when messages of two channels, log reads and subscription losses
/// interleave.
@Suite("A stream's order of events")
struct PeerStreamTests {
    let room = RoomID("r")!
    let ann = PeerUser(id: PeerID("ann")!, username: "ann")

    func entry(_ milliseconds: UInt64) -> EntryID { EntryID(milliseconds: milliseconds, sequence: 0) }
    func user(_ id: String) -> ByteBuffer { ByteBuffer(string: "{\"id\":\"\(id)\",\"username\":\"\(id)\"}") }

    func joins(_ peer: String, at milliseconds: UInt64) -> Inbound {
        Inbound(source: .room(room), entry: entry(milliseconds), message: .join(peer: PeerID(peer)!, user: user(peer)))
    }
    func leaves(_ peer: String, at milliseconds: UInt64) -> Inbound {
        Inbound(source: .room(room), entry: entry(milliseconds), message: .leave(peer: PeerID(peer)!, user: user(peer)))
    }
    func introductions(at milliseconds: UInt64, asOf position: UInt64, _ members: [String]) -> Inbound {
        Inbound(source: .own, entry: entry(milliseconds), message: .introductions(room: room, at: entry(position), members: members.map(user)))
    }
    func farewells(at milliseconds: UInt64, asOf position: UInt64, joinedAt: UInt64, _ members: [String]) -> Inbound {
        Inbound(
            source: .own, entry: entry(milliseconds),
            message: .farewells(room: room, at: entry(position), joinedAt: entry(joinedAt), members: members.map(user)))
    }
    func relay(_ name: String, at milliseconds: UInt64) -> Inbound {
        Inbound(source: .own, entry: entry(milliseconds), message: .relay(event: name, data: ByteBuffer(string: "{}")))
    }

    /// A started stream that joined the room at entry 1 with bob there, its catch-up done.
    func makeStream() -> PeerStream {
        let stream = PeerStream(user: ann, session: "s", limits: .init())
        stream.confirm()
        #expect(stream.start(connected: StreamEvent(name: "connected", data: ByteBuffer(string: "{}")), replay: [], stillLive: { true }))
        stream.deliver(introductions(at: 1, asOf: 1, ["bob"]))
        stream.caughtUp(in: room, from: entry(1), with: [])
        return stream
    }

    /// The events queued so far, as `name peer`.
    func drain(_ stream: PeerStream, count: Int) async -> [String] {
        var events: [String] = []
        while events.count < count, let batch = await stream.nextBatch() {
            for event in batch {
                let data = String(buffer: event.data)
                let peer = data.split(separator: "\"id\":\"").dropFirst().first?.split(separator: "\"").first.map(String.init)
                events.append(peer.map { "\(event.name) \($0)" } ?? event.name)
            }
        }
        return events
    }

    @Test func aCatchUpOvertakenByAnotherLossKeepsHolding() async {
        let stream = makeStream()
        stream.hold()  // the subscription drops; carl joins meanwhile, only the log has it
        // The catch-up reads the logs (nothing yet), but the subscription drops again before
        // it lets events through: the stream must go on holding.
        #expect(!stream.start(connected: nil, replay: [], stillLive: { false }))
        // Back: a live event after the gap arrives before the next catch-up has read the log.
        stream.deliver(joins("dave", at: 3))
        // The next catch-up reads the gap (and the live one) from the log.
        #expect(stream.start(connected: nil, replay: [joins("carl", at: 2), joins("dave", at: 3)], stillLive: { true }))
        #expect(await drain(stream, count: 4) == ["connected", "add-peer bob", "add-peer carl", "add-peer dave"])
    }

    @Test func liveEntriesWaitWhileTheJoinerReadsTheRoomsLog() async {
        let stream = PeerStream(user: ann, session: "s", limits: .init())
        stream.confirm()
        stream.start(connected: StreamEvent(name: "connected", data: ByteBuffer(string: "{}")), replay: [], stillLive: { true })
        stream.deliver(joins("carl", at: 2))  // before the introductions: not yet followed, dropped
        stream.deliver(introductions(at: 1, asOf: 1, ["bob"]))
        stream.deliver(leaves("bob", at: 3))  // live, while the log is read: waits
        // The log after the join holds carl's join and bob's leave.
        stream.caughtUp(in: room, from: entry(1), with: [joins("carl", at: 2), leaves("bob", at: 3)])
        stream.deliver(joins("dave", at: 4))
        #expect(await drain(stream, count: 5) == ["connected", "add-peer bob", "add-peer carl", "remove-peer bob", "add-peer dave"])
    }

    @Test func farewellsWaitUntilTheRoomReachesTheLeave() async {
        let stream = makeStream()
        // Ann leaves at 5, when bob and carl (joined at 4) remain. Her farewells arrive on her
        // own channel before carl's join and her leave arrive on the room's.
        stream.deliver(farewells(at: 6, asOf: 5, joinedAt: 1, ["bob", "carl"]))
        stream.deliver(relay("offer", at: 7))  // behind the farewells in her own log: waits too
        stream.deliver(joins("carl", at: 4))
        stream.deliver(leaves("ann", at: 5))
        stream.deliver(joins("dave", at: 8))  // after her leave: not hers to see
        #expect(
            await drain(stream, count: 6) == ["connected", "add-peer bob", "add-peer carl", "remove-peer bob", "remove-peer carl", "offer"])
        #expect(stream.followedRooms.isEmpty)
    }

    @Test func aResumeFromAnIdMidwayThroughIntroductionsDeliversTheRestFirst() async {
        let stream = PeerStream(user: ann, session: "s", limits: .init())
        stream.confirm()
        // Introductions (entry 3) as of the room's entry 1, bob and carl; carl left at 2, after
        // join.lua's snapshot but before remember-room.lua wrote them. The client saw bob's.
        stream.resume(
            from: EventCursor(own: LogPosition(entry: entry(3), delivered: 1), rooms: [room: entry(1)]), introducing: [room: entry(1)])
        let replay = EventLogs.interleaved([introductions(at: 3, asOf: 1, ["bob", "carl"]), leaves("carl", at: 2)])
        #expect(stream.start(connected: StreamEvent(name: "connected", data: ByteBuffer(string: "{}")), replay: replay, stillLive: { true }))
        // The node reads the room's log after entry 1 once `connected` is out, as after a join.
        stream.caughtUp(in: room, from: entry(1), with: [leaves("carl", at: 2)])
        stream.deliver(leaves("carl", at: 2))  // live as well: delivered once
        #expect(await drain(stream, count: 3) == ["connected", "add-peer carl", "remove-peer carl"])
    }

    @Test func aResumeAfterThePeersLeaveTakesNothingMoreOfTheRoom() async {
        let stream = PeerStream(user: ann, session: "s", limits: .init())
        stream.confirm()
        // The client saw its own leave at 5 (its cursor is there); its farewells (entry 7, as of
        // 5) had not come yet. Carl joined at 6, after it left.
        stream.resume(
            from: EventCursor(own: LogPosition(entry: entry(1), delivered: 1), rooms: [room: entry(5)]), leaving: [room: entry(5)])
        let replay = EventLogs.interleaved([joins("carl", at: 6), farewells(at: 7, asOf: 5, joinedAt: 1, ["bob"])])
        #expect(stream.start(connected: StreamEvent(name: "connected", data: ByteBuffer(string: "{}")), replay: replay, stillLive: { true }))
        stream.deliver(relay("offer", at: 8))
        #expect(await drain(stream, count: 3) == ["connected", "remove-peer bob", "offer"])
        #expect(stream.followedRooms.isEmpty)
    }

    @Test func eventIDsParseBackAndTheFirstFormatDoesNot() {
        let cursor = EventCursor(own: LogPosition(entry: entry(7), delivered: 2), rooms: [room: entry(5)])
        #expect(EventCursor(lastEventID: cursor.description) == cursor)
        #expect(EventCursor(lastEventID: "1700000000000-0-1;r=1700000000000-0-2") == nil)
    }
}
