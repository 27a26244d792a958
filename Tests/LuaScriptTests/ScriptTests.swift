@testable import Coordinator
import Foundation
import LuaScripts
import NIOCore
import RedisClient
import Testing

private typealias Published = ScriptHarness.Published
private let user = ScriptHarness.user
private let snapshot = ScriptHarness.snapshot

/// A room's log entry as published on its channel, the entry id left out.
private func roomEvent(_ room: String, _ kind: String, _ peer: String) -> Published {
    Published(channel: "sb:room:{\(room)}:events", payload: "*\n\(kind)\n\(peer)\n\(user(peer))")
}

/// A peer's introductions to, or farewells from, a room, as published on its channel.
private func toPeer(_ peer: String, _ lines: [String]) -> Published {
    Published(channel: "sb:peer:{\(peer)}:events", payload: (["*"] + lines).joined(separator: "\n"))
}

@Suite("Lua scripts against a live redis-server")
struct ScriptTests {
    // MARK: connect.lua

    @Test func connectRecordsTheStreamAndMarksItsStart() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a")
            let peer = "sb:peer:{a}"
            #expect(try await h.connect("a", session: "s1", node: "node-1") == .array([.integer(0), .bulkString(ByteBuffer(string: ""))]))
            #expect(try await h.hash(peer) == ["session": "s1", "node": "node-1", "user": user("a")])
            #expect(try await h.published() == [Published(channel: "sb:peer:{a}:events", payload: "!session\ns1")])

            #expect(try await h.connect("a", session: "s2", node: "node-2") == .array([.integer(0), .bulkString(ByteBuffer(string: "s1"))]))
            #expect(try await h.hash(peer)["session"] == "s2")
            #expect(try await h.published() == [Published(channel: "sb:peer:{a}:events", payload: "!session\ns2")])
        }
    }

    @Test func aResumingStreamTakesOverTheSessionAndItsLog() async throws {
        try await ScriptHarness.with { h in
            _ = try await h.connect("b", session: "s1")
            _ = try await h.rememberRoom("b", "r1")
            #expect(try await h.relay(to: "b", senderRooms: ["r1"]).int == 0)  // nobody listening: kept in the log
            #expect(try await h.connect("b", session: "s2", resume: true) == .array([.integer(1), .bulkString(ByteBuffer(string: "s1"))]))
            #expect(try await h.redis.send(["XLEN", "sb:peer:{b}:log"]).int == 2)  // the introductions and the relay
            // A fresh stream starts an empty log.
            #expect(try await h.connect("b", session: "s3") == .array([.integer(0), .bulkString(ByteBuffer(string: "s2"))]))
            #expect(try await h.redis.send(["EXISTS", "sb:peer:{b}:log"]).int == 0)
            // With no session left, a resuming stream starts a fresh one.
            _ = try await h.disconnect("b", session: "s3")
            #expect(try await h.connect("b", session: "s4", resume: true) == .array([.integer(0), .bulkString(ByteBuffer(string: ""))]))
        }
    }

    // MARK: join.lua

    @Test func joinPublishesOnceOnTheRoomsChannelAndReturnsWhoWasThere() async throws {
        try await ScriptHarness.with { h in
            try await h.watch(rooms: "r1")
            try await h.watch("a", "b", "c")
            let room = "sb:room:{r1}:members"
            let first = snapshot(try await h.join("r1", "a"))
            #expect(first?.status == 0 && first?.members == [])
            #expect(try await h.hash(room) == ["a": user("a")])
            #expect(try await h.published().map(\.withoutPosition) == [roomEvent("r1", "join", "a")])

            let second = snapshot(try await h.join("r1", "b"))
            #expect(second?.status == 1 && second?.members == [user("a")])
            #expect(try await h.hash(room) == ["a": user("a"), "b": user("b")])
            // One message, whatever the room's size; nothing on any peer's channel.
            #expect(try await h.published().map(\.withoutPosition) == [roomEvent("r1", "join", "b")])

            let third = snapshot(try await h.join("r1", "c"))
            #expect(third?.status == 2 && Set(third?.members ?? []) == [user("a"), user("b")])
            let published = try await h.published()
            #expect(published.map(\.withoutPosition) == [roomEvent("r1", "join", "c")])

            // One log entry per join, published under its id, which join.lua returned.
            let entries = try await h.log("sb:room:{r1}:log")
            #expect(entries.map(\.fields) == ["a", "b", "c"].map { ["m", "join\n\($0)\n\(user($0))"] })
            #expect(entries.map(\.id) == [first?.entry, second?.entry, third?.entry].compactMap { $0 })
            #expect(published.first?.payload.hasPrefix(entries[2].id + "\n") == true)
            let ttl = try await h.redis.send(["PTTL", "sb:room:{r1}:log"]).int ?? 0
            #expect(ttl > 60_000 && ttl <= 70_000)
        }
    }

    @Test func joiningTwiceChangesNothingAndPublishesNothing() async throws {
        try await ScriptHarness.with { h in
            try await h.watch(rooms: "r1")
            let room = "sb:room:{r1}:members"
            _ = try await h.join("r1", "a")
            _ = try await h.join("r1", "b")
            _ = try await h.published()
            let entries = try await h.log("sb:room:{r1}:log")
            // The snapshot as of now, without the joiner: enough to finish an earlier attempt.
            let again = snapshot(try await h.join("r1", "b"))
            #expect(again?.status == ScriptCode.alreadyMember.rawValue)
            #expect(again?.entry == entries.last?.id && again?.members == [user("a")])
            #expect(try await h.published() == [])
            #expect(try await h.hash(room) == ["a": user("a"), "b": user("b")])
            #expect(try await h.log("sb:room:{r1}:log").count == entries.count)
        }
    }

    /// A join whose first attempt stopped before remember-room.lua gets, on its retry, the
    /// snapshot that attempt would have had: who joined since comes through the room's log.
    @Test func joiningAgainGivesTheSnapshotAsOfTheFirstJoin() async throws {
        try await ScriptHarness.with { h in
            _ = try await h.join("r1", "a")
            let first = snapshot(try await h.join("r1", "b"))
            _ = try await h.join("r1", "c")
            _ = try await h.leave("r1", "a", snapshot: false)
            let again = snapshot(try await h.join("r1", "b"))
            #expect(again?.status == ScriptCode.alreadyMember.rawValue)
            #expect(again?.entry == first?.entry && again?.members == [user("a")])
        }
    }

    @Test func aFullRoomRefusesTheJoiner() async throws {
        try await ScriptHarness.with { h in
            try await h.watch(rooms: "r1")
            _ = try await h.join("r1", "a", maxSize: 2)
            _ = try await h.join("r1", "b", maxSize: 2)
            _ = try await h.published()
            #expect(try await h.join("r1", "c", maxSize: 2).array?.first?.int == ScriptCode.roomFull.rawValue)
            #expect(try await h.published() == [])
            #expect(try await h.hash("sb:room:{r1}:members").keys.sorted() == ["a", "b"])
        }
    }

    // MARK: remember-room.lua

    @Test func rememberRoomIntroducesThePeerOnceAndOnlyWhileItHasAStream() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a")
            let asOf = RoomSnapshot(position: EntryID(milliseconds: 5, sequence: 1), members: user("b") + "\n" + user("c"))
            #expect(try await h.rememberRoom("a", "r1", snapshot: asOf).int == ScriptCode.noSession.rawValue)
            #expect(try await h.allKeys() == [])
            _ = try await h.connect("a", session: "s1")
            _ = try await h.published()

            #expect(try await h.rememberRoom("a", "r1", snapshot: asOf).int == 1)
            let introductions = ["joined", "r1", "5-1", user("b"), user("c")]
            #expect(try await h.published().map(\.withoutPosition) == [toPeer("a", introductions)])
            #expect(try await h.log("sb:peer:{a}:log").map(\.fields) == [["m", introductions.joined(separator: "\n")]])
            #expect(try await h.hash("sb:peer:{a}:rooms") == ["r1": "5-1"])
            // Again (a join whose first reply was lost): nothing recorded or sent twice.
            #expect(try await h.rememberRoom("a", "r1", snapshot: asOf).int == 0)
            #expect(try await h.published() == [])

            #expect(try await h.rememberRoom("a", "r2").int == 1)
            #expect(try await h.published().map(\.withoutPosition) == [toPeer("a", ["joined", "r2", "0-0"])])
            #expect(try await h.rememberRoom("a", "r3", maxRooms: 2).int == ScriptCode.tooManyRooms.rawValue)
            #expect(try await h.rememberRoom("a", "r2", maxRooms: 2).int == 0)  // already in it: not one more
            #expect(try await h.published() == [])
        }
    }

    // MARK: leave.lua and forget-room.lua

    @Test func leavePublishesOnceOnTheRoomsChannelAndReturnsWhoRemains() async throws {
        try await ScriptHarness.with { h in
            let room = "sb:room:{r1}:members"
            for peer in ["a", "b", "c"] { _ = try await h.join("r1", peer) }
            try await h.watch(rooms: "r1")
            try await h.watch("a", "b", "c")

            let left = snapshot(try await h.leave("r1", "b", snapshot: true))
            #expect(left?.status == 2 && Set(left?.members ?? []) == [user("a"), user("c")])
            #expect(try await h.hash(room) == ["a": user("a"), "c": user("c")])
            #expect(try await h.published().map(\.withoutPosition) == [roomEvent("r1", "leave", "b")])
            #expect(try await h.log("sb:room:{r1}:log").last?.fields == ["m", "leave\nb\n\(user("b"))"])
            #expect(try await h.log("sb:room:{r1}:log").last?.id == left?.entry)

            // A disconnected leaver has nobody to tell: no snapshot.
            let gone = snapshot(try await h.leave("r1", "c", snapshot: false))
            #expect(gone?.status == 1 && gone?.members == [])
            #expect(try await h.published().map(\.withoutPosition) == [roomEvent("r1", "leave", "c")])
        }
    }

    @Test func leavingWhenAbsentChangesNothingAndSaysWhoIsThere() async throws {
        try await ScriptHarness.with { h in
            try await h.watch(rooms: "r1")
            let room = "sb:room:{r1}:members"
            _ = try await h.join("r1", "a")
            _ = try await h.published()
            let absent = snapshot(try await h.leave("r1", "z", snapshot: true))
            #expect(absent?.status == ScriptCode.notMember.rawValue && absent?.members == [user("a")])
            #expect(absent?.entry == (try await h.log("sb:room:{r1}:log")).last?.id)
            #expect(try await h.published() == [])
            #expect(try await h.hash(room) == ["a": user("a")])
            #expect(snapshot(try await h.leave("empty", "z", snapshot: true))?.entry == "0-0")
            #expect(try await h.allKeys() == ["sb:room:{r1}:joins", "sb:room:{r1}:log", room])
        }
    }

    /// Likewise a leave whose first attempt stopped before forget-room.lua.
    @Test func leavingAgainGivesTheSnapshotAsOfTheLeave() async throws {
        try await ScriptHarness.with { h in
            for peer in ["a", "b", "c"] { _ = try await h.join("r1", peer) }
            let left = snapshot(try await h.leave("r1", "b", snapshot: true))
            _ = try await h.join("r1", "d")
            _ = try await h.leave("r1", "a", snapshot: false)
            let again = snapshot(try await h.leave("r1", "b", snapshot: true))
            #expect(again?.status == ScriptCode.notMember.rawValue)
            #expect(again?.entry == left?.entry && Set(again?.members ?? []) == [user("a"), user("c")])
        }
    }

    @Test func theLastLeaveDeletesTheRoom() async throws {
        try await ScriptHarness.with { h in
            let room = "sb:room:{r1}:members"
            _ = try await h.join("r1", "a")
            _ = try await h.join("r1", "b")
            _ = try await h.leave("r1", "a", snapshot: true)
            #expect(try await h.redis.send(["EXISTS", room]).int == 1)
            #expect(snapshot(try await h.leave("r1", "b", snapshot: true))?.status == 0)
            #expect(try await h.redis.send(["EXISTS", room]).int == 0)
        }
    }

    @Test func forgetRoomSaysFarewellOnceWithWhereTheMembershipBegan() async throws {
        try await ScriptHarness.with { h in
            _ = try await h.connect("a", session: "s1")
            try await h.joinFully("r1", "a")
            let joinedAt = try await h.hash("sb:peer:{a}:rooms")["r1"] ?? ""
            try await h.watch("a")
            let remaining = RoomSnapshot(position: EntryID(milliseconds: 9, sequence: 0), members: user("b"))
            #expect(try await h.forgetRoom("a", "r1", snapshot: remaining).int == 1)
            let farewells = ["left", "r1", "9-0", joinedAt, user("b")]
            #expect(try await h.published().map(\.withoutPosition) == [toPeer("a", farewells)])
            #expect(try await h.log("sb:peer:{a}:log").last?.fields == ["m", farewells.joined(separator: "\n")])
            #expect(try await h.hash("sb:peer:{a}:rooms") == [:])
            // Again: nothing to forget, nothing sent.
            #expect(try await h.forgetRoom("a", "r1", snapshot: remaining).int == 0)
            #expect(try await h.published() == [])
            // With no session the room is forgotten all the same, and nobody told.
            _ = try await h.rememberRoom("a", "r2")
            try await h.redis.send(["DEL", "sb:peer:{a}"])
            _ = try await h.published()
            #expect(try await h.forgetRoom("a", "r2", snapshot: remaining).int == ScriptCode.noSession.rawValue)
            #expect(try await h.published() == [])
            #expect(try await h.redis.send(["EXISTS", "sb:peer:{a}:rooms"]).int == 0)
        }
    }

    // MARK: disconnect.lua

    @Test func disconnectHandsBackTheRoomsUnlessReplaced() async throws {
        try await ScriptHarness.with { h in
            let (peer, rooms) = ("sb:peer:{a}", "sb:peer:{a}:rooms")
            _ = try await h.connect("a", session: "s1")
            _ = try await h.rememberRoom("a", "r1")
            _ = try await h.rememberRoom("a", "r2")

            // An older stream ending must not take the newer one's rooms.
            #expect(try await h.disconnect("a", session: "s0") == .array([]))
            #expect(try await h.allKeys() == [peer, "sb:peer:{a}:log", rooms].sorted())

            let handedBack = try await h.disconnect("a", session: "s1").array?.compactMap(\.string)
            #expect(Set(handedBack ?? []) == ["r1", "r2"])
            #expect(try await h.allKeys() == [])
            #expect(try await h.disconnect("a", session: "s1") .int == ScriptCode.noSession.rawValue)  // no session at all
        }
    }

    @Test func disconnectWithNoSessionEndsWhicheverThePeerHas() async throws {
        try await ScriptHarness.with { h in
            _ = try await h.connect("a", session: "s1")
            _ = try await h.rememberRoom("a", "r1")
            #expect(try await h.disconnect("a", session: "") == .array([.bulkString(ByteBuffer(string: "r1"))]))
            #expect(try await h.allKeys() == [])
        }
    }

    // MARK: reassert.lua

    @Test func reassertPutsBackALostSessionAndItsRoomsSilently() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a")
            let keys = ["sb:peer:{a}", "sb:peer:{a}:rooms"]
            #expect(try await h.run(.reassert, keys: keys, "s1", "n", user("a"), "r1", "5-0", "r2", "6-1").int == 1)
            #expect(try await h.hash("sb:peer:{a}") == ["session": "s1", "node": "n", "user": user("a")])
            #expect(try await h.hash("sb:peer:{a}:rooms") == ["r1": "5-0", "r2": "6-1"])
            // A newer session is left alone.
            #expect(try await h.run(.reassert, keys: keys, "s0", "m", user("a"), "r3", "7-0").int == 0)
            #expect(try await h.hash("sb:peer:{a}")["session"] == "s1")
            #expect(try await h.hash("sb:peer:{a}:rooms").keys.sorted() == ["r1", "r2"])
            // The session still there, with a room lost (a replica that was behind took over):
            // the room is recorded again, and what Redis kept is kept.
            try await h.redis.send(["HDEL", "sb:peer:{a}:rooms", "r2"])
            try await h.redis.send(["HSET", "sb:peer:{a}:rooms", "r1", "9-0"])
            #expect(try await h.run(.reassert, keys: keys, "s1", "n", user("a"), "r1", "5-0", "r2", "6-1").int == 2)
            #expect(try await h.hash("sb:peer:{a}:rooms") == ["r1": "9-0", "r2": "6-1"])
            #expect(try await h.hash("sb:peer:{a}") == ["session": "s1", "node": "n", "user": user("a")])
            #expect(try await h.published() == [])
        }
    }

    // MARK: relay.lua

    @Test func relayRoutesOnlyToAStreamThatSharesARoom() async throws {
        try await ScriptHarness.with { h in
            #expect(try await h.relay(to: "b", senderRooms: ["r1"]).int == ScriptCode.noSession.rawValue)
            _ = try await h.connect("b", session: "s1")
            _ = try await h.rememberRoom("b", "r1")
            try await h.redis.send(["DEL", "sb:peer:{b}:log"])
            try await h.watch("b")
            // A stranger (no room, or other rooms) is refused and nothing is published or logged.
            #expect(try await h.relay(to: "b", senderRooms: []).int == ScriptCode.noSharedRoom.rawValue)
            #expect(try await h.relay(to: "b", senderRooms: ["r2", "r3"]).int == ScriptCode.noSharedRoom.rawValue)
            #expect(try await h.published() == [])
            #expect(try await h.redis.send(["EXISTS", "sb:peer:{b}:log"]).int == 0)

            #expect(try await h.relay(to: "b", senderRooms: ["r2", "r1"]).int == 1)
            let entries = try await h.log("sb:peer:{b}:log")
            let message = "relay\nice-candidate\n" + ScriptHarness.relayData
            #expect(entries.map(\.fields) == [["m", message]])
            #expect(try await h.published() == [Published(channel: "sb:peer:{b}:events", payload: "\(entries[0].id)\n" + message)])
        }
    }

    @Test func relayReadsTheSendersRoomsItselfOnASingleRedis() async throws {
        try await ScriptHarness.with { h in
            let sender = PeerID("a")!
            _ = try await h.connect("a", session: "s0")
            _ = try await h.connect("b", session: "s1")
            _ = try await h.rememberRoom("b", "r1")
            try await h.redis.send(["DEL", "sb:peer:{b}:log"])
            try await h.watch("b")
            // The sender is in no room yet, then only in another one: refused, nothing sent.
            #expect(try await h.relay(to: "b", senderRooms: .read(of: sender)).int == ScriptCode.noSharedRoom.rawValue)
            _ = try await h.rememberRoom("a", "r2")
            #expect(try await h.relay(to: "b", senderRooms: .read(of: sender)).int == ScriptCode.noSharedRoom.rawValue)
            #expect(try await h.published() == [])

            _ = try await h.rememberRoom("a", "r1")
            #expect(try await h.relay(to: "b", senderRooms: .read(of: sender)).int == 1)
            #expect(try await h.log("sb:peer:{b}:log").map(\.fields) == [["m", "relay\nice-candidate\n" + ScriptHarness.relayData]])
            // Once the sender has left the shared room, the next relay is refused.
            _ = try await h.forgetRoom("a", "r1", snapshot: .init(position: .zero, members: ""))
            #expect(try await h.relay(to: "b", senderRooms: .read(of: sender)).int == ScriptCode.noSharedRoom.rawValue)
        }
    }

    @Test func aRelayToAPeerWithNoStreamWaitsInItsLog() async throws {
        try await ScriptHarness.with { h in
            _ = try await h.connect("b", session: "s1")
            _ = try await h.rememberRoom("b", "r1")
            #expect(try await h.relay(to: "b", senderRooms: ["r1"]).int == 0)
            #expect(try await h.log("sb:peer:{b}:log").count == 2)
        }
    }

    // MARK: read-log.lua

    @Test func readLogReadsFromAnEntryOrAfterIt() async throws {
        try await ScriptHarness.with { h in
            for peer in ["a", "b", "c"] { _ = try await h.join("r1", peer) }
            _ = try await h.leave("r1", "c", snapshot: false)
            let entries = try await h.log("sb:room:{r1}:log")  // join a, join b, join c, leave c
            func read(_ start: String) async throws -> [String] {
                (try await h.readLog("sb:room:{r1}:log", from: start).array ?? []).compactMap(\.string)
            }
            #expect(try await read("(\(entries[1].id)") == [entries[2].id, entries[2].fields[1], entries[3].id, entries[3].fields[1]])
            #expect(try await read(entries[3].id) == [entries[3].id, entries[3].fields[1]])
            #expect(try await read("(\(entries[3].id)") == [])
            #expect(try await read("(0-0").count == 8)
            // An expired log holds nothing more.
            #expect(try await h.readLog("sb:room:{gone}:log", from: "(1-0") == .array([]))
            await #expect(throws: RedisServerError.self) { try await h.readLog("sb:room:{r1}:log", from: "x") }
        }
    }

    @Test func readLogRefusesWhenTheLogWasTrimmedPastThePosition() async throws {
        try await ScriptHarness.with { h in
            _ = try await h.connect("b", session: "s1")
            _ = try await h.rememberRoom("b", "r1")
            _ = try await h.relay(to: "b", senderRooms: ["r1"], logLength: 10)
            let first = try await h.log("sb:peer:{b}:log")[0].id
            for _ in 0..<300 { _ = try await h.relay(to: "b", senderRooms: ["r1"], logLength: 10) }
            #expect(try await h.redis.send(["XLEN", "sb:peer:{b}:log"]).int ?? 0 < 301)
            #expect(try await h.readLog("sb:peer:{b}:log", from: "(\(first)").int == ScriptCode.logTrimmed.rawValue)
            let kept = try await h.log("sb:peer:{b}:log")
            #expect(try await h.readLog("sb:peer:{b}:log", from: kept[0].id).array?.count == 2 * kept.count)
            #expect(try await h.readLog("sb:peer:{b}:log", from: "(\(kept[0].id)").array?.count == 2 * (kept.count - 1))
        }
    }

    // MARK: Together

    @Test func onlyExpiringLogsAreLeftAfterEveryoneDisconnects() async throws {
        try await ScriptHarness.with { h in
            let peers = ["a", "b", "c"]
            for peer in peers {
                _ = try await h.connect(peer, session: "s-\(peer)")
                for room in ["r1", "r2"] { try await h.joinFully(room, peer) }
            }
            #expect(try await h.allKeys().count == 2 * 3 + 3 * 3)
            for peer in peers {
                let rooms = try await h.disconnect(peer, session: "s-\(peer)")
                for room in rooms.array?.compactMap(\.string) ?? [] { _ = try await h.leave(room, peer, snapshot: false) }
            }
            #expect(try await h.allKeys() == ["sb:room:{r1}:log", "sb:room:{r2}:log"])
            for log in ["sb:room:{r1}:log", "sb:room:{r2}:log"] { #expect(try await h.redis.send(["PTTL", log]).int ?? -1 > 0) }
        }
    }

    /// A join costs two publishes whatever the room's size: one on the room's channel, one on
    /// the joiner's (counted by Redis, which counts the commands scripts run).
    @Test(arguments: [2, 10, 100]) func aJoinPublishesTwiceWhateverTheRoomsSize(size: Int) async throws {
        try await ScriptHarness.with { h in
            for member in 1..<size {
                _ = try await h.connect("m\(member)", session: "s")
                try await h.joinFully("r", "m\(member)")
            }
            _ = try await h.connect("joiner", session: "s")
            try await h.redis.send(["CONFIG", "RESETSTAT"])
            try await h.joinFully("r", "joiner")
            let stats = try await h.redis.send(["INFO", "commandstats"]).string ?? ""
            #expect(stats.contains("cmdstat_spublish:calls=2,"))
            #expect(!stats.contains("cmdstat_publish:"))
        }
    }

    /// A command refused as it is queued (READONLY after a failover, LOADING, …) aborts the
    /// transaction; the caller sees that refusal, which says whether to wait and retry, not
    /// EXECABORT. (Wrong arity is a refusal at queue time that is easy to cause.)
    @Test func aTransactionRefusedAsItIsQueuedThrowsTheRefusal() async throws {
        try await ScriptHarness.with { h in
            let call = ScriptRegistry.Call(.join, keys: ["sb:room:{r}:members", "sb:room:{r}:log", "sb:room:{r}:joins"],
                                           arguments: ["sb:room:{r}:events", "a", user("a"), "0", "1000", "70000"])
            var refusal: RedisServerError?
            do { _ = try await h.scripts.run(call, reading: ["HVALS"], beforeScript: true) } catch let error as RedisServerError { refusal = error }
            #expect(refusal?.code == "ERR" && refusal?.message.contains("wrong number of arguments") == true, "\(String(describing: refusal))")
            #expect(try await h.allKeys() == [])
        }
    }

    @Test func scriptsComeBackAfterScriptFlush() async throws {
        try await ScriptHarness.with { h in
            try await h.redis.send(["SCRIPT", "FLUSH"])
            #expect(snapshot(try await h.join("r", "a"))?.status == 0)
            #expect(snapshot(try await h.join("r", "b"))?.status == 1)
            let stats = try await h.redis.send(["INFO", "commandstats"]).string ?? ""
            #expect(stats.contains("cmdstat_evalsha:calls=3"))  // the NOSCRIPT one, its retry, and the next
            #expect(!stats.contains("cmdstat_eval:"))
        }
    }

    @Test func everyScriptHasItsHeader() {
        #expect(LuaScript.all.map(\.name) == [
            "connect", "disconnect", "forget-room", "join", "leave", "read-log", "reassert", "relay", "remember-room",
        ])
        for script in LuaScript.all {
            for part in ["KEYS[1]", "ARGV[1]", "Returns"] {
                #expect(script.source.contains(part), "\(script.name).lua's header names no \(part)")
            }
        }
    }

    /// `Lua/expanded/` holds what the nodes run: each script with its includes written out.
    @Test func theExpandedScriptsAreWhatTheNodesRun() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Lua/expanded")
        for script in LuaScript.all {
            let file = folder.appendingPathComponent("\(script.name).lua").standardizedFileURL
            let text = try? String(contentsOf: file, encoding: .utf8)
            // (An embedded constant ends without the file's last newline.)
            #expect(text?.trimmingCharacters(in: .newlines) == script.source.trimmingCharacters(in: .newlines), "Lua/expanded/\(script.name).lua is out of date: run make lua")
            #expect(script.source.hasPrefix("#!lua\n"), "\(script.name).lua: the shebang makes a cluster refuse keys of other slots")
            #expect(!script.source.contains("--- @include"))
        }
    }

    /// The files run by hand with `redis-cli --eval`, as the README shows.
    @Test func scriptsRunByHandWithRedisCli() async throws {
        try await ScriptHarness.with { h in
            let lua = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Lua/expanded/join.lua")
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [
                "redis-cli", "-s", h.server.socketPath, "--eval", lua.standardizedFileURL.path,
                "sb:room:{demo}:members", "sb:room:{demo}:log", "sb:room:{demo}:joins", ",", "sb:room:{demo}:events", "ann", user("ann"), "100", "1000", "70000",
            ]
            // Output to a file and an exit awaited by polling: a blocking read or wait would
            // hold one of the few threads every test in this process shares.
            let output = h.server.directory.appendingPathComponent("redis-cli.out")
            _ = FileManager.default.createFile(atPath: output.path, contents: nil)
            process.standardOutput = try FileHandle(forWritingTo: output)
            try process.run()
            let deadline = ContinuousClock.now + .seconds(30)
            while process.isRunning, ContinuousClock.now < deadline + .seconds(5) {
                if ContinuousClock.now > deadline { kill(process.processIdentifier, SIGKILL) }
                try await Task.sleep(for: .milliseconds(20))
            }
            let text = try String(contentsOf: output, encoding: .utf8)
            // redis-cli prints bare values, one per line, when not on a terminal: members before, entry id.
            let lines = text.split(separator: "\n")
            #expect(lines.count == 2 && lines.first == "0" && EntryID(lines.last ?? "") != nil)
            #expect(try await h.hash("sb:room:{demo}:members") == ["ann": user("ann")])
        }
    }
}

/// The rule a Redis Cluster enforces, kept by construction until a cluster test proves it: each
/// script call's keys, and the channels it publishes on, share one hash slot.
@Suite("Every script call stays in one slot")
struct ScriptSlotTests {
    let keys = try! KeySpace(prefix: "sb:")
    let user = PeerUser(id: PeerID("ann")!, username: "ann")
    let room = RoomID("lobby")!
    let log = EventLogLimits(entries: 1000, retention: .seconds(70))
    let snapshot = RoomSnapshot(position: EntryID(milliseconds: 1, sequence: 0), members: "")

    /// The slots of a call's keys and of its channel arguments.
    func slots(_ call: some ScriptCall) -> Set<Int> {
        Set((call.keys + call.arguments.filter { $0.hasSuffix(":events") }).map(HashSlot.of))
    }

    @Test func eachCallsKeysAndChannelsShareASlot() {
        let peer = user.id
        let calls: [(String, Set<Int>)] = [
            ("connect", slots(ConnectCall(keys, user: user, session: "s", node: "n", resume: false))),
            ("join", slots(JoinCall(keys, room: room, user: user, maxRoomSize: 100, log: log))),
            ("remember-room", slots(RememberRoomCall(keys, peer: peer, room: room, maxRooms: 16, snapshot: snapshot, log: log))),
            ("leave", slots(LeaveCall(keys, room: room, peer: peer, snapshot: true, log: log))),
            ("forget-room", slots(ForgetRoomCall(keys, peer: peer, room: room, snapshot: snapshot, log: log))),
            ("disconnect", slots(DisconnectCall(keys, peer: peer, session: nil))),
            // (Only on a cluster: on a single Redis relay.lua reads the sender's rooms as well.)
            ("relay", slots(RelayCall(keys, target: peer, event: EventName("offer")!, data: "{}", senderRooms: .given(["lobby"]), log: log))),
            ("read-log (room)", slots(ReadLogCall(keys, peer: peer, source: .room(room), after: .zero))),
            ("read-log (own)", slots(ReadLogCall(keys, peer: peer, source: .own, after: .zero))),
            ("reassert", slots(ReassertCall(keys, user: user, session: "s", node: "n", rooms: [room: .zero]))),
        ]
        for (script, slots) in calls { #expect(slots.count == 1, "\(script).lua touches slots \(slots)") }
        // The room's keys and the peer's keys sit apart: a join is two calls, in order.
        let join = JoinCall(keys, room: room, user: user, maxRoomSize: 100, log: log)
        let remember = RememberRoomCall(keys, peer: peer, room: room, maxRooms: 16, snapshot: snapshot, log: log)
        #expect(slots(join) != slots(remember))
    }

    @Test func theFleetsEpochAndRecoveryWindowShareASlot() {
        // A join checks both with its peer's keys: at most two primaries of a cluster.
        #expect(HashSlot.of(keys.epoch) == HashSlot.of(keys.recovering))
    }
}
