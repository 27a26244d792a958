@testable import Coordinator
import NIOCore
import Testing

/// A stream's hold across subscription losses, without Redis: the order of events a node sees
/// when its subscription drops again while it is reading the logs.
@Suite("A stream held across subscription losses")
struct PeerStreamTests {
    let room = RoomID("r")!

    func event(_ name: String, at milliseconds: UInt64) -> RoutedEvent {
        RoutedEvent(
            name: name, source: room, position: LogPosition(milliseconds: milliseconds, sequence: 0, message: 1),
            data: ByteBuffer(string: "{}"))
    }

    func makeStream() -> PeerStream {
        let stream = PeerStream(
            user: PeerUser(id: PeerID("ann")!, username: "ann"), session: "s", limits: .init(),
            cursor: EventCursor(rooms: [room: LogPosition(milliseconds: 1, sequence: 0, message: 1)]))
        stream.confirm()
        #expect(stream.start(connected: StreamEvent(name: "connected", data: ByteBuffer(string: "{}")), replay: [], stillLive: { true }))
        return stream
    }

    @Test func aCatchUpOvertakenByAnotherLossKeepsHolding() async {
        let stream = makeStream()
        stream.hold()  // the subscription drops; "gap" is published meanwhile, only the log has it
        // The catch-up reads the logs (nothing yet), but the subscription drops again before
        // it lets events through: the stream must go on holding.
        #expect(!stream.start(connected: nil, replay: [], stillLive: { false }))
        // Back: a live event after the gap arrives before the next catch-up has read the log.
        stream.deliver(event("after", at: 3))
        // The next catch-up reads the gap (and the live one) from the log.
        #expect(stream.start(connected: nil, replay: [event("gap", at: 2), event("after", at: 3)], stillLive: { true }))
        let names = (await stream.nextBatch() ?? []).map(\.name)
        #expect(names == ["connected", "gap", "after"])
    }

    @Test func aHeldStreamLetsLiveEventsThroughOnceCaughtUp() async {
        let stream = makeStream()
        stream.hold()
        stream.deliver(event("live", at: 3))
        #expect(stream.start(connected: nil, replay: [event("missed", at: 2)], stillLive: { true }))
        stream.deliver(event("later", at: 4))
        stream.deliver(event("live", at: 3))  // already delivered: dropped
        var names: [String] = []
        while names.count < 4, let batch = await stream.nextBatch() { names += batch.map(\.name) }
        #expect(names == ["connected", "missed", "live", "later"])
    }
}
