@testable import Coordinator
import Foundation
import LuaScripts
import NIOCore
import RedisClient
import Testing

private typealias Published = ScriptHarness.Published
private let user = ScriptHarness.user

/// What join.lua publishes to `to`, with the log position left out (`Published.withoutPosition`).
private func addPeer(_ to: String, about: String, room: String, offer: Bool) -> Published {
    Published(channel: "sb:peer:{\(to)}:events", payload: "add-peer\n\(room)=*\n{\"peer\":\(user(about)),\"roomId\":\"\(room)\",\"offer\":\(offer)}")
}

private func removePeer(_ to: String, about: String, room: String) -> Published {
    Published(channel: "sb:peer:{\(to)}:events", payload: "remove-peer\n\(room)=*\n{\"peer\":\(user(about)),\"roomId\":\"\(room)\"}")
}

private func joined(_ peer: String, room: String) -> Published {
    Published(channel: "sb:peer:{\(peer)}:events", payload: "!joined\n\(room)=*\n")
}

private func left(_ peer: String, room: String) -> Published {
    Published(channel: "sb:peer:{\(peer)}:events", payload: "!left\n\(room)=*\n")
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
            #expect(try await h.redis.send(["XLEN", "sb:peer:{b}:log"]).int == 1)
            // A fresh stream starts an empty log.
            #expect(try await h.connect("b", session: "s3") == .array([.integer(0), .bulkString(ByteBuffer(string: "s2"))]))
            #expect(try await h.redis.send(["EXISTS", "sb:peer:{b}:log"]).int == 0)
            // With no session left, a resuming stream starts a fresh one.
            _ = try await h.disconnect("b", session: "s3")
            #expect(try await h.connect("b", session: "s4", resume: true) == .array([.integer(0), .bulkString(ByteBuffer(string: ""))]))
        }
    }

    // MARK: join.lua

    @Test func joinIntroducesTheJoinerToEveryMember() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a", "b", "c")
            let room = "sb:room:{r1}:members"
            #expect(try await h.join("r1", "a").int == 0)
            #expect(try await h.hash(room) == ["a": user("a")])
            #expect(try await h.published().map(\.withoutPosition) == [joined("a", room: "r1")])

            #expect(try await h.join("r1", "b").int == 1)
            #expect(try await h.hash(room) == ["a": user("a"), "b": user("b")])
            #expect(try await h.published().map(\.withoutPosition) == [
                joined("b", room: "r1"),
                addPeer("a", about: "b", room: "r1", offer: false),
                addPeer("b", about: "a", room: "r1", offer: true),
            ])

            #expect(try await h.join("r1", "c").int == 2)
            #expect(try await h.published().map(\.withoutPosition).sorted() == [
                joined("c", room: "r1"),
                addPeer("a", about: "c", room: "r1", offer: false),
                addPeer("b", about: "c", room: "r1", offer: false),
                addPeer("c", about: "a", room: "r1", offer: true),
                addPeer("c", about: "b", room: "r1", offer: true),
            ].sorted())
        }
    }

    @Test func joinLogsWhatItPublishesUnderTheIdItPublishes() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a", "b")
            _ = try await h.join("r1", "a")
            _ = try await h.published()
            _ = try await h.join("r1", "b")
            let entries = try await h.log("sb:room:{r1}:log")
            #expect(entries.map(\.fields) == [
                ["!", "join a"],
                ["!", "join b", "a", "add-peer\n{\"peer\":\(user("b")),\"roomId\":\"r1\",\"offer\":false}",
                 "b", "add-peer\n{\"peer\":\(user("a")),\"roomId\":\"r1\",\"offer\":true}"],
            ])
            let positions = try await h.published().map { $0.payload.split(separator: "\n")[1] }
            // Where b's membership begins, then the entry's first and second message.
            #expect(positions == ["r1=\(entries[1].id)-0", "r1=\(entries[1].id)-1", "r1=\(entries[1].id)-2"])
            let ttl = try await h.redis.send(["PTTL", "sb:room:{r1}:log"]).int ?? 0
            #expect(ttl > 60_000 && ttl <= 70_000)
        }
    }

    @Test func joiningTwiceChangesNothingAndPublishesNothing() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a", "b")
            let room = "sb:room:{r1}:members"
            _ = try await h.join("r1", "a")
            _ = try await h.join("r1", "b")
            _ = try await h.published()
            let logged = try await h.log("sb:room:{r1}:log").count
            #expect(try await h.join("r1", "b").int == ScriptCode.alreadyMember.rawValue)
            #expect(try await h.published() == [])
            #expect(try await h.hash(room) == ["a": user("a"), "b": user("b")])
            #expect(try await h.log("sb:room:{r1}:log").count == logged)
        }
    }

    @Test func aFullRoomRefusesTheJoiner() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a", "b", "c")
            _ = try await h.join("r1", "a", maxSize: 2)
            _ = try await h.join("r1", "b", maxSize: 2)
            _ = try await h.published()
            #expect(try await h.join("r1", "c", maxSize: 2).int == ScriptCode.roomFull.rawValue)
            #expect(try await h.published() == [])
            #expect(try await h.hash("sb:room:{r1}:members").keys.sorted() == ["a", "b"])
        }
    }

    // MARK: leave.lua

    @Test func leaveTellsTheRemainingMembersAndTheLeaver() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a", "b", "c")
            let room = "sb:room:{r1}:members"
            for peer in ["a", "b", "c"] { _ = try await h.join("r1", peer) }
            _ = try await h.published()

            #expect(try await h.leave("r1", "b", tellLeaver: true).int == 2)
            #expect(try await h.hash(room) == ["a": user("a"), "c": user("c")])
            #expect(try await h.published().map(\.withoutPosition).sorted() == [
                removePeer("a", about: "b", room: "r1"),
                removePeer("c", about: "b", room: "r1"),
                removePeer("b", about: "a", room: "r1"),
                removePeer("b", about: "c", room: "r1"),
                left("b", room: "r1"),
            ].sorted())

            // A disconnected leaver has nobody to tell.
            #expect(try await h.leave("r1", "c", tellLeaver: false).int == 1)
            #expect(try await h.published().map(\.withoutPosition) == [removePeer("a", about: "c", room: "r1"), left("c", room: "r1")])
        }
    }

    @Test func leavingWhenAbsentIsANoOp() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a", "z")
            let room = "sb:room:{r1}:members"
            _ = try await h.join("r1", "a")
            _ = try await h.published()
            #expect(try await h.leave("r1", "z", tellLeaver: true).int == ScriptCode.notMember.rawValue)
            #expect(try await h.published() == [])
            #expect(try await h.hash(room) == ["a": user("a")])
            #expect(try await h.leave("empty", "z", tellLeaver: true).int == ScriptCode.notMember.rawValue)
            #expect(try await h.allKeys() == ["sb:room:{r1}:log", room])
        }
    }

    @Test func theLastLeaveDeletesTheRoom() async throws {
        try await ScriptHarness.with { h in
            let room = "sb:room:{r1}:members"
            _ = try await h.join("r1", "a")
            _ = try await h.join("r1", "b")
            _ = try await h.leave("r1", "a", tellLeaver: true)
            #expect(try await h.redis.send(["EXISTS", room]).int == 1)
            #expect(try await h.leave("r1", "b", tellLeaver: true).int == 0)
            #expect(try await h.redis.send(["EXISTS", room]).int == 0)
        }
    }

    // MARK: remember-room.lua and disconnect.lua

    @Test func rememberRoomOnlyWhileThePeerHasAStream() async throws {
        try await ScriptHarness.with { h in
            #expect(try await h.rememberRoom("a", "r1").int == ScriptCode.noSession.rawValue)
            #expect(try await h.allKeys() == [])
            _ = try await h.connect("a", session: "s1")
            #expect(try await h.rememberRoom("a", "r1").int == 1)
            #expect(try await h.rememberRoom("a", "r2").int == 1)
            #expect(try await h.set("sb:peer:{a}:rooms") == ["r1", "r2"])
            #expect(try await h.rememberRoom("a", "r3", maxRooms: 2).int == ScriptCode.tooManyRooms.rawValue)
            #expect(try await h.rememberRoom("a", "r2", maxRooms: 2).int == 1)  // already in it: not one more
        }
    }

    @Test func disconnectHandsBackTheRoomsUnlessReplaced() async throws {
        try await ScriptHarness.with { h in
            let (peer, rooms) = ("sb:peer:{a}", "sb:peer:{a}:rooms")
            _ = try await h.connect("a", session: "s1")
            _ = try await h.rememberRoom("a", "r1")
            _ = try await h.rememberRoom("a", "r2")
            _ = try await h.relay(to: "a", senderRooms: ["r1"])

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

    @Test func reassertPutsBackALostSessionSilently() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a")
            let keys = ["sb:peer:{a}", "sb:peer:{a}:rooms"]
            #expect(try await h.run(.reassert, keys: keys, "s1", "n", user("a"), "r1", "r2").int == 1)
            #expect(try await h.hash("sb:peer:{a}") == ["session": "s1", "node": "n", "user": user("a")])
            #expect(try await h.set("sb:peer:{a}:rooms") == ["r1", "r2"])
            // A session Redis still has (this one or a newer one) is left alone.
            #expect(try await h.run(.reassert, keys: keys, "s0", "m", user("a"), "r3").int == 0)
            #expect(try await h.hash("sb:peer:{a}")["session"] == "s1")
            #expect(try await h.set("sb:peer:{a}:rooms") == ["r1", "r2"])
            #expect(try await h.published() == [])
        }
    }

    // MARK: relay.lua

    @Test func relayRoutesOnlyToAStreamThatSharesARoom() async throws {
        try await ScriptHarness.with { h in
            #expect(try await h.relay(to: "b", senderRooms: ["r1"]).int == ScriptCode.noSession.rawValue)
            _ = try await h.connect("b", session: "s1")
            _ = try await h.rememberRoom("b", "r1")
            try await h.watch("b")
            // A stranger (no room, or other rooms) is refused and nothing is published or logged.
            #expect(try await h.relay(to: "b", senderRooms: []).int == ScriptCode.noSharedRoom.rawValue)
            #expect(try await h.relay(to: "b", senderRooms: ["r2", "r3"]).int == ScriptCode.noSharedRoom.rawValue)
            #expect(try await h.published() == [])
            #expect(try await h.redis.send(["EXISTS", "sb:peer:{b}:log"]).int == 0)

            #expect(try await h.relay(to: "b", senderRooms: ["r2", "r1"]).int == 1)
            let entries = try await h.log("sb:peer:{b}:log")
            #expect(entries.map(\.fields) == [["b", "ice-candidate\n" + ScriptHarness.relayData]])
            #expect(try await h.published() == [
                Published(channel: "sb:peer:{b}:events", payload: "ice-candidate\n=\(entries[0].id)-1\n" + ScriptHarness.relayData)
            ])
        }
    }

    @Test func aRelayToAPeerWithNoStreamWaitsInItsLog() async throws {
        try await ScriptHarness.with { h in
            _ = try await h.connect("b", session: "s1")
            _ = try await h.rememberRoom("b", "r1")
            #expect(try await h.relay(to: "b", senderRooms: ["r1"]).int == 0)
            #expect(try await h.log("sb:peer:{b}:log").count == 1)
        }
    }

    // MARK: resume.lua

    @Test func resumeReadsBackWhatThePeerWasSentAfterAPosition() async throws {
        try await ScriptHarness.with { h in
            for peer in ["a", "b", "c"] { _ = try await h.join("r1", peer) }
            _ = try await h.leave("r1", "c", tellLeaver: true)
            let entries = try await h.log("sb:room:{r1}:log")  // join a, join b, join c, leave c
            let addC = "add-peer\n{\"peer\":\(user("c")),\"roomId\":\"r1\",\"offer\":false}"
            let removeC = "remove-peer\n{\"peer\":\(user("c")),\"roomId\":\"r1\"}"

            // After the join of b: what a was told about c (the first message of each entry).
            #expect(try await h.resume("sb:room:{r1}:log", peer: "a", after: "\(entries[1].id)-2") == .array([
                .bulkString(ByteBuffer(string: "\(entries[2].id)-1")), .bulkString(ByteBuffer(string: addC)),
                .bulkString(ByteBuffer(string: "\(entries[3].id)-1")), .bulkString(ByteBuffer(string: removeC)),
            ]))
            #expect(try await h.resume("sb:room:{r1}:log", peer: "a", after: "\(entries[3].id)-1") == .array([]))
            // Within an entry, only the messages after the position's.
            #expect(try await h.resume("sb:room:{r1}:log", peer: "b", after: "\(entries[2].id)-3").array?.count == 2)
            // "": since the peer's latest join, that entry included (b was introduced to a in it).
            let fromJoin = try await h.resume("sb:room:{r1}:log", peer: "b", after: "").array ?? []
            #expect(fromJoin.count == 2 + 6)
            #expect(Array(fromJoin.prefix(3)) == [
                .bulkString(ByteBuffer(string: "\(entries[1].id)-0")), .bulkString(ByteBuffer(string: "!joined\n")),
                .bulkString(ByteBuffer(string: "\(entries[1].id)-2")),
            ])
            #expect(try await h.resume("sb:room:{r1}:log", peer: "z", after: "") .int == ScriptCode.logTrimmed.rawValue)
            #expect(try await h.resume("sb:room:{gone}:log", peer: "a", after: "\(entries[0].id)-0") == .array([]))
        }
    }

    @Test func resumeRefusesWhenTheLogWasTrimmedPastThePosition() async throws {
        try await ScriptHarness.with { h in
            _ = try await h.connect("b", session: "s1")
            _ = try await h.rememberRoom("b", "r1")
            _ = try await h.relay(to: "b", senderRooms: ["r1"], logLength: 10)
            let first = try await h.log("sb:peer:{b}:log")[0].id
            for _ in 0..<300 { _ = try await h.relay(to: "b", senderRooms: ["r1"], logLength: 10) }
            #expect(try await h.redis.send(["XLEN", "sb:peer:{b}:log"]).int ?? 0 < 301)
            #expect(try await h.resume("sb:peer:{b}:log", peer: "b", after: "\(first)-1") .int == ScriptCode.logTrimmed.rawValue)
            let kept = try await h.log("sb:peer:{b}:log")
            #expect(try await h.resume("sb:peer:{b}:log", peer: "b", after: "\(kept[0].id)-1").array?.count == 2 * (kept.count - 1))
        }
    }

    // MARK: Together

    @Test func onlyExpiringLogsAreLeftAfterEveryoneDisconnects() async throws {
        try await ScriptHarness.with { h in
            let peers = ["a", "b", "c"]
            for peer in peers {
                _ = try await h.connect(peer, session: "s-\(peer)")
                for room in ["r1", "r2"] {
                    _ = try await h.join(room, peer)
                    _ = try await h.rememberRoom(peer, room)
                }
            }
            #expect(try await h.allKeys().count == 2 * 2 + 2 * 3)
            for peer in peers {
                let rooms = try await h.disconnect(peer, session: "s-\(peer)")
                for room in rooms.array?.compactMap(\.string) ?? [] { _ = try await h.leave(room, peer, tellLeaver: false) }
            }
            #expect(try await h.allKeys() == ["sb:room:{r1}:log", "sb:room:{r2}:log"])
            for log in ["sb:room:{r1}:log", "sb:room:{r2}:log"] { #expect(try await h.redis.send(["PTTL", log]).int ?? -1 > 0) }
        }
    }

    @Test func scriptsComeBackAfterScriptFlush() async throws {
        try await ScriptHarness.with { h in
            try await h.redis.send(["SCRIPT", "FLUSH"])
            #expect(try await h.join("r", "a").int == 0)
            #expect(try await h.join("r", "b").int == 1)
            let stats = try await h.redis.send(["INFO", "commandstats"]).string ?? ""
            #expect(stats.contains("cmdstat_evalsha:calls=3"))  // the NOSCRIPT one, its retry, and the next
            #expect(!stats.contains("cmdstat_eval:"))
        }
    }

    @Test func everyScriptHasItsHeader() {
        #expect(LuaScript.all.map(\.name) == ["connect", "disconnect", "join", "leave", "reassert", "relay", "remember-room", "resume"])
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
                "sb:room:{demo}:members", "sb:room:{demo}:log", ",", "demo", "ann", user("ann"), "sb:peer:{", "100", "1000", "70000",
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
            #expect(text.trimmingCharacters(in: .whitespacesAndNewlines) == "0")  // redis-cli prints bare values when not on a terminal
            #expect(try await h.hash("sb:room:{demo}:members") == ["ann": user("ann")])
        }
    }
}
