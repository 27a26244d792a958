@testable import Coordinator
import NIOCore
import Testing

/// The run of a room's latest entries a joining stream catches up from without reading the log.
@Suite("A room's recent entries")
struct RecentRoomEntriesTests {
    private func entry(_ milliseconds: UInt64) -> Inbound {
        Inbound(source: .room(RoomID("r")!), entry: EntryID(milliseconds: milliseconds, sequence: 0),
                message: .join(peer: PeerID("p\(milliseconds)")!, user: ByteBuffer(string: "{}")))
    }

    private func ids(_ entries: [Inbound]?) -> [UInt64]? { entries?.map(\.entry.milliseconds) }

    @Test func givesWhatCameAfterTheAnchor() {
        var recent = RecentRoomEntries()
        for id in 1...3 { recent.record(entry(UInt64(id)), unbroken: true) }
        #expect(ids(recent.entries(after: EntryID(milliseconds: 1, sequence: 0))) == [2, 3])
        #expect(ids(recent.entries(after: EntryID(milliseconds: 3, sequence: 0))) == [])
        // An anchor the run does not hold proves nothing: the log is read instead.
        #expect(recent.entries(after: EntryID(milliseconds: 9, sequence: 0)) == nil)
    }

    @Test func aBreakInTheRunForgetsItsEntries() {
        var recent = RecentRoomEntries()
        recent.record(entry(1), unbroken: true)
        recent.record(entry(2), unbroken: false)  // came on an earlier subscription
        recent.record(entry(3), unbroken: true)
        #expect(recent.entries(after: EntryID(milliseconds: 1, sequence: 0)) == nil)
        #expect(recent.entries(after: EntryID(milliseconds: 2, sequence: 0)) == nil)
        #expect(ids(recent.entries(after: EntryID(milliseconds: 3, sequence: 0))) == [])
        recent.record(entry(2), unbroken: true)  // out of order
        #expect(recent.entries(after: EntryID(milliseconds: 3, sequence: 0)) == nil)
        recent.record(entry(4), unbroken: true)
        recent.forget()
        #expect(recent.entries(after: EntryID(milliseconds: 4, sequence: 0)) == nil)
    }

    @Test func keepsAFewEntriesForALittleWhile() {
        var recent = RecentRoomEntries()
        let start = NIODeadline.now()
        for id in 1...(RecentRoomEntries.capacity + 1) { recent.record(entry(UInt64(id)), unbroken: true, at: start) }
        #expect(recent.entries(after: EntryID(milliseconds: 1, sequence: 0)) == nil)
        #expect(recent.entries(after: EntryID(milliseconds: 2, sequence: 0))?.count == RecentRoomEntries.capacity - 1)
        recent.prune(now: start + RecentRoomEntries.maxAge + .milliseconds(1))
        #expect(recent.entries(after: EntryID(milliseconds: 2, sequence: 0)) == nil)
    }
}
