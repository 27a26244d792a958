import Coordinator
import Foundation
import LuaScripts
import RedisClient
import Testing

private typealias Published = ScriptHarness.Published
private let user = ScriptHarness.user

private func addPeer(_ to: String, about: String, room: String, offer: Bool) -> Published {
    Published(channel: "sb:to:\(to)", payload: "add-peer\n{\"peer\":\(user(about)),\"roomId\":\"\(room)\",\"offer\":\(offer)}")
}

private func removePeer(_ to: String, about: String, room: String) -> Published {
    Published(channel: "sb:to:\(to)", payload: "remove-peer\n{\"peer\":\(user(about)),\"roomId\":\"\(room)\"}")
}

@Suite("Lua scripts against a live redis-server")
struct ScriptTests {
    // MARK: connect.lua

    @Test func connectRecordsTheStreamAndMarksItsStart() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a")
            let peer = "sb:peer:{a}"
            #expect(try await h.run(.connect, keys: [peer], "s1", "node-1", user("a"), "sb:to:a").string == "")
            #expect(try await h.hash(peer) == ["session": "s1", "node": "node-1", "user": user("a")])
            #expect(try await h.published() == [Published(channel: "sb:to:a", payload: "!session\ns1")])

            #expect(try await h.run(.connect, keys: [peer], "s2", "node-2", user("a"), "sb:to:a").string == "s1")
            #expect(try await h.hash(peer)["session"] == "s2")
            #expect(try await h.published() == [Published(channel: "sb:to:a", payload: "!session\ns2")])
        }
    }

    // MARK: join.lua

    @Test func joinIntroducesTheJoinerToEveryMember() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a", "b", "c")
            let room = "sb:room:{r1}:members"
            #expect(try await h.run(.join, keys: [room], "r1", "a", user("a"), "sb:to:").int == 0)
            #expect(try await h.hash(room) == ["a": user("a")])
            #expect(try await h.published() == [])

            #expect(try await h.run(.join, keys: [room], "r1", "b", user("b"), "sb:to:").int == 1)
            #expect(try await h.hash(room) == ["a": user("a"), "b": user("b")])
            #expect(try await h.published() == [
                addPeer("a", about: "b", room: "r1", offer: false),
                addPeer("b", about: "a", room: "r1", offer: true),
            ])

            #expect(try await h.run(.join, keys: [room], "r1", "c", user("c"), "sb:to:").int == 2)
            #expect(try await h.published().sorted() == [
                addPeer("a", about: "c", room: "r1", offer: false),
                addPeer("b", about: "c", room: "r1", offer: false),
                addPeer("c", about: "a", room: "r1", offer: true),
                addPeer("c", about: "b", room: "r1", offer: true),
            ].sorted())
        }
    }

    @Test func joiningTwiceChangesNothingAndPublishesNothing() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a", "b")
            let room = "sb:room:{r1}:members"
            _ = try await h.run(.join, keys: [room], "r1", "a", user("a"), "sb:to:")
            _ = try await h.run(.join, keys: [room], "r1", "b", user("b"), "sb:to:")
            _ = try await h.published()
            #expect(try await h.run(.join, keys: [room], "r1", "b", user("b"), "sb:to:").int == -1)
            #expect(try await h.published() == [])
            #expect(try await h.hash(room) == ["a": user("a"), "b": user("b")])
        }
    }

    // MARK: leave.lua

    @Test func leaveTellsTheRemainingMembersAndTheLeaver() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a", "b", "c")
            let room = "sb:room:{r1}:members"
            for peer in ["a", "b", "c"] { _ = try await h.run(.join, keys: [room], "r1", peer, user(peer), "sb:to:") }
            _ = try await h.published()

            #expect(try await h.run(.leave, keys: [room], "r1", "b", "sb:to:", "1").int == 2)
            #expect(try await h.hash(room) == ["a": user("a"), "c": user("c")])
            #expect(try await h.published().sorted() == [
                removePeer("a", about: "b", room: "r1"),
                removePeer("c", about: "b", room: "r1"),
                removePeer("b", about: "a", room: "r1"),
                removePeer("b", about: "c", room: "r1"),
            ].sorted())

            // A disconnected leaver ("0") has nobody to tell.
            #expect(try await h.run(.leave, keys: [room], "r1", "c", "sb:to:", "0").int == 1)
            #expect(try await h.published() == [removePeer("a", about: "c", room: "r1")])
        }
    }

    @Test func leavingWhenAbsentIsANoOp() async throws {
        try await ScriptHarness.with { h in
            try await h.watch("a", "z")
            let room = "sb:room:{r1}:members"
            _ = try await h.run(.join, keys: [room], "r1", "a", user("a"), "sb:to:")
            #expect(try await h.run(.leave, keys: [room], "r1", "z", "sb:to:", "1").int == -1)
            #expect(try await h.published() == [])
            #expect(try await h.hash(room) == ["a": user("a")])
            #expect(try await h.run(.leave, keys: ["sb:room:{empty}:members"], "empty", "z", "sb:to:", "1").int == -1)
            #expect(try await h.allKeys() == [room])
        }
    }

    @Test func theLastLeaveDeletesTheRoom() async throws {
        try await ScriptHarness.with { h in
            let room = "sb:room:{r1}:members"
            _ = try await h.run(.join, keys: [room], "r1", "a", user("a"), "sb:to:")
            _ = try await h.run(.join, keys: [room], "r1", "b", user("b"), "sb:to:")
            _ = try await h.run(.leave, keys: [room], "r1", "a", "sb:to:", "1")
            #expect(try await h.redis.send(["EXISTS", room]).int == 1)
            #expect(try await h.run(.leave, keys: [room], "r1", "b", "sb:to:", "1").int == 0)
            #expect(try await h.redis.send(["EXISTS", room]).int == 0)
        }
    }

    // MARK: remember-room.lua and disconnect.lua

    @Test func rememberRoomOnlyWhileThePeerHasAStream() async throws {
        try await ScriptHarness.with { h in
            let (peer, rooms) = ("sb:peer:{a}", "sb:peer:{a}:rooms")
            #expect(try await h.run(.rememberRoom, keys: [peer, rooms], "r1").int == 0)
            #expect(try await h.allKeys() == [])
            _ = try await h.run(.connect, keys: [peer], "s1", "n", user("a"), "sb:to:a")
            #expect(try await h.run(.rememberRoom, keys: [peer, rooms], "r1").int == 1)
            #expect(try await h.run(.rememberRoom, keys: [peer, rooms], "r2").int == 1)
            #expect(try await h.set(rooms) == ["r1", "r2"])
        }
    }

    @Test func disconnectHandsBackTheRoomsUnlessReplaced() async throws {
        try await ScriptHarness.with { h in
            let (peer, rooms) = ("sb:peer:{a}", "sb:peer:{a}:rooms")
            _ = try await h.run(.connect, keys: [peer], "s1", "n", user("a"), "sb:to:a")
            _ = try await h.run(.rememberRoom, keys: [peer, rooms], "r1")
            _ = try await h.run(.rememberRoom, keys: [peer, rooms], "r2")

            // An older stream ending must not take the newer one's rooms.
            #expect(try await h.run(.disconnect, keys: [peer, rooms], "s0") == .array([]))
            #expect(try await h.allKeys() == [peer, rooms].sorted())

            let handedBack = try await h.run(.disconnect, keys: [peer, rooms], "s1").array?.compactMap(\.string)
            #expect(Set(handedBack ?? []) == ["r1", "r2"])
            #expect(try await h.allKeys() == [])
            #expect(try await h.run(.disconnect, keys: [peer, rooms], "s1") == .array([]))
        }
    }

    // MARK: relay.lua

    @Test func relayRoutesOnlyToAStreamThatSharesARoom() async throws {
        try await ScriptHarness.with { h in
            let message = "ice-candidate\n{\"peer\":\(user("a")),\"data\":{\"candidate\":\"x\"}}"
            let target = ["sb:peer:{b}", "sb:peer:{b}:rooms"]
            #expect(try await h.run(.relay, keys: target, "sb:to:b", message, "r1").int == -1)
            _ = try await h.run(.connect, keys: ["sb:peer:{b}"], "s1", "n", user("b"), "sb:to:b")
            _ = try await h.run(.rememberRoom, keys: target, "r1")
            try await h.watch("b")
            // A stranger (no room, or other rooms) is refused and nothing is published.
            #expect(try await h.run(.relay, keys: target, "sb:to:b", message).int == -2)
            #expect(try await h.run(.relay, keys: target, "sb:to:b", message, "r2", "r3").int == -2)
            #expect(try await h.published() == [])
            #expect(try await h.run(.relay, keys: target, "sb:to:b", message, "r2", "r1").int == 1)
            #expect(try await h.published() == [Published(channel: "sb:to:b", payload: message)])
        }
    }

    @Test func relayToAStreamWhoseNodeIsGoneReachesNobody() async throws {
        try await ScriptHarness.with { h in
            let target = ["sb:peer:{b}", "sb:peer:{b}:rooms"]
            _ = try await h.run(.connect, keys: ["sb:peer:{b}"], "s1", "n", user("b"), "sb:to:b")
            _ = try await h.run(.rememberRoom, keys: target, "r1")
            #expect(try await h.run(.relay, keys: target, "sb:to:b", "x\n{}", "r1").int == 0)
        }
    }

    // MARK: Together

    @Test func noKeyIsLeftAfterEveryoneDisconnects() async throws {
        try await ScriptHarness.with { h in
            let peers = ["a", "b", "c"]
            for peer in peers {
                _ = try await h.run(.connect, keys: ["sb:peer:{\(peer)}"], "s-\(peer)", "n", user(peer), "sb:to:\(peer)")
                for room in ["r1", "r2"] {
                    _ = try await h.run(.join, keys: ["sb:room:{\(room)}:members"], room, peer, user(peer), "sb:to:")
                    _ = try await h.run(.rememberRoom, keys: ["sb:peer:{\(peer)}", "sb:peer:{\(peer)}:rooms"], room)
                }
            }
            #expect(try await h.allKeys().count == 2 + 2 * 3)
            for peer in peers {
                let rooms = try await h.run(.disconnect, keys: ["sb:peer:{\(peer)}", "sb:peer:{\(peer)}:rooms"], "s-\(peer)")
                for room in rooms.array?.compactMap(\.string) ?? [] {
                    _ = try await h.run(.leave, keys: ["sb:room:{\(room)}:members"], room, peer, "sb:to:", "0")
                }
            }
            #expect(try await h.allKeys() == [])
        }
    }

    @Test func scriptsComeBackAfterScriptFlush() async throws {
        try await ScriptHarness.with { h in
            try await h.redis.send(["SCRIPT", "FLUSH"])
            #expect(try await h.run(.join, keys: ["sb:room:{r}:members"], "r", "a", user("a"), "sb:to:").int == 0)
            #expect(try await h.run(.join, keys: ["sb:room:{r}:members"], "r", "b", user("b"), "sb:to:").int == 1)
            let stats = try await h.redis.send(["INFO", "commandstats"]).string ?? ""
            #expect(stats.contains("cmdstat_evalsha:calls=3"))  // the NOSCRIPT one, its retry, and the next
            #expect(!stats.contains("cmdstat_eval:"))
        }
    }

    @Test func everyScriptHasItsHeader() {
        #expect(LuaScript.all.map(\.name) == ["connect", "disconnect", "join", "leave", "relay", "remember-room"])
        for script in LuaScript.all {
            for part in ["KEYS[1]", "ARGV[1]", "Returns"] {
                #expect(script.source.contains(part), "\(script.name).lua's header names no \(part)")
            }
        }
    }

    /// The files run by hand with `redis-cli --eval`, as the README shows.
    @Test func scriptsRunByHandWithRedisCli() async throws {
        try await ScriptHarness.with { h in
            let lua = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Lua/join.lua")
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [
                "redis-cli", "-s", h.server.socketPath, "--eval", lua.standardizedFileURL.path,
                "sb:room:{demo}:members", ",", "demo", "ann", user("ann"), "sb:to:",
            ]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let pid = process.processIdentifier
            let watchdog = Task {
                try await Task.sleep(for: .seconds(30))
                kill(pid, SIGKILL)
            }
            defer { watchdog.cancel() }
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(text.trimmingCharacters(in: .whitespacesAndNewlines) == "0")  // redis-cli prints bare values when not on a terminal
            #expect(try await h.hash("sb:room:{demo}:members") == ["ann": user("ann")])
        }
    }
}
