@testable import Coordinator
import Foundation
import LuaScripts
import NIOConcurrencyHelpers
import NIOCore
import RedisClient
import RedisServer
import Testing

/// A live redis-server with the scripts loaded, and a subscriber that records what the
/// scripts publish on the channels a test watches.
final class ScriptHarness: Sendable {
    let server: RedisServerProcess
    let redis: RedisClient
    let scripts: ScriptRegistry
    let keys = try! KeySpace(prefix: "sb:")
    private let subscriber: RedisSubscriber
    private let inbox = Inbox()
    private let tasks: [Task<Void, Never>]
    static let endOfCapture = "capture:end"

    struct Published: Equatable, CustomStringConvertible, Comparable {
        let channel: String
        let payload: String
        var description: String { "\(channel) ← \(payload.replacingOccurrences(of: "\n", with: "⏎"))" }
        static func < (a: Self, b: Self) -> Bool { (a.channel, a.payload) < (b.channel, b.payload) }

        /// The message with its entry id (the first line) as `*`.
        var withoutPosition: Published {
            var lines = payload.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
            guard lines.count == 2, EntryID(lines[0]) != nil else { return self }
            lines[0] = "*"
            return Published(channel: channel, payload: lines.joined(separator: "\n"))
        }
    }

    static func with(_ body: (ScriptHarness) async throws -> Void) async throws {
        try await RedisServerProcess.with { server in
            let harness = try await ScriptHarness(server: server)
            defer { harness.tasks.forEach { $0.cancel() } }
            try await body(harness)
            await harness.redis.close()
        }
    }

    private init(server: RedisServerProcess) async throws {
        self.server = server
        let endpoint = try RedisEndpoint(url: server.url)
        redis = RedisClient(endpoint: endpoint)
        scripts = ScriptRegistry(redis: redis)
        subscriber = RedisSubscriber(client: redis)
        let subscriber = subscriber
        let inbox = inbox
        tasks = [
            Task { await subscriber.run() },
            Task {
                for await message in subscriber.messages {
                    inbox.messages.withLockedValue { $0.append((message.channel, String(buffer: message.payload))) }
                }
            },
        ]
        await subscriber.waitUntilConnected()
        try await subscriber.subscribe(Self.endOfCapture)
        try await scripts.loadAll()
    }

    /// Records messages on these peers' channels from now on.
    func watch(_ peers: String...) async throws {
        for peer in peers { try await subscriber.subscribe(keys.channel(PeerID(peer)!)) }
    }

    /// Records messages on these rooms' channels from now on.
    func watch(rooms: String...) async throws {
        for room in rooms { try await subscriber.subscribe(keys.channel(RoomID(room)!)) }
    }

    /// Everything published on watched channels since the last call, in publish order.
    func published() async throws -> [Published] {
        let marker = UUID().uuidString
        try await redis.send(["SPUBLISH", Self.endOfCapture, marker])
        for _ in 0..<500 {
            let done = inbox.messages.withLockedValue { messages -> [Published]? in
                guard let end = messages.firstIndex(where: { $0.channel == Self.endOfCapture && $0.payload == marker }) else {
                    return nil
                }
                defer { messages.removeFirst(end + 1) }
                return messages[..<end].filter { $0.channel != Self.endOfCapture }.map { Published(channel: $0.channel, payload: $0.payload) }
            }
            if let done { return done }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("end-of-capture marker never arrived")
        return []
    }

    func run(_ script: LuaScript, keys: [String], _ arguments: String...) async throws -> RESPValue {
        try await scripts.run(script, keys: keys, arguments: arguments)
    }

    // The scripts with the arguments a node passes (logs kept 1,000 entries, 70 s), built by
    // the same types the node uses; the replies raw, as the scripts' headers describe them.

    static let logLimits = EventLogLimits(entries: 1000, retention: .seconds(70))

    /// The reply as the node gets it: join.lua's and leave.lua's with the members read in the
    /// same transaction, as `[the script's reply, the read's]`.
    private func raw(_ call: some ScriptCall) async throws -> RESPValue {
        try await scripts.reply(call)
    }

    func connect(_ peer: String, session: String, node: String = "n", resume: Bool = false) async throws -> RESPValue {
        try await raw(ConnectCall(keys, user: Self.peerUser(peer), session: session, node: node, resume: resume))
    }

    func join(_ room: String, _ peer: String, maxSize: Int = 0) async throws -> RESPValue {
        try await raw(JoinCall(keys, room: RoomID(room)!, user: Self.peerUser(peer), maxRoomSize: maxSize, log: Self.logLimits))
    }

    func leave(_ room: String, _ peer: String, snapshot: Bool) async throws -> RESPValue {
        try await raw(LeaveCall(keys, room: RoomID(room)!, peer: PeerID(peer)!, snapshot: snapshot, log: Self.logLimits))
    }

    /// remember-room.lua with a snapshot as a join takes it (by default: nobody, as of "0-0").
    func rememberRoom(_ peer: String, _ room: String, maxRooms: Int = 0, snapshot: RoomSnapshot = .init(position: .zero, members: ""))
        async throws -> RESPValue
    {
        try await raw(RememberRoomCall(keys, peer: PeerID(peer)!, room: RoomID(room)!, maxRooms: maxRooms, snapshot: snapshot, log: Self.logLimits))
    }

    func forgetRoom(_ peer: String, _ room: String, snapshot: RoomSnapshot) async throws -> RESPValue {
        try await raw(ForgetRoomCall(keys, peer: PeerID(peer)!, room: RoomID(room)!, snapshot: snapshot, log: Self.logLimits))
    }

    /// join.lua then remember-room.lua with its snapshot, as a node joins a connected peer.
    func joinFully(_ room: String, _ peer: String) async throws {
        let call = JoinCall(keys, room: RoomID(room)!, user: Self.peerUser(peer), maxRoomSize: 0, log: Self.logLimits)
        guard case .joined(let snapshot) = try await scripts.run(call) else { throw ScriptHarnessError("join failed") }
        #expect(try await rememberRoom(peer, room, snapshot: snapshot).int == 1)
    }

    struct ScriptHarnessError: Error {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// - Parameter session: "" for whatever session the peer has.
    func disconnect(_ peer: String, session: String) async throws -> RESPValue {
        try await raw(DisconnectCall(keys, peer: PeerID(peer)!, session: session.isEmpty ? nil : session))
    }

    static let relayData = #"{"peer":{"id":"a","username":"user-a"},"data":{"candidate":"x"}}"#

    /// relay.lua: an `ice-candidate` from `a` to `target`, with the sender's rooms given.
    func relay(to target: String, senderRooms: [String], logLength: Int = 1000) async throws -> RESPValue {
        try await relay(to: target, senderRooms: .given(senderRooms), logLength: logLength)
    }

    /// relay.lua: an `ice-candidate` from `a` to `target`; `.read(of:)` has the script read the
    /// sender's rooms hash.
    func relay(to target: String, senderRooms: RelayCall.SenderRooms, logLength: Int = 1000) async throws -> RESPValue {
        try await raw(RelayCall(
            keys, target: PeerID(target)!, event: EventName("ice-candidate")!, data: Self.relayData, senderRooms: senderRooms,
            log: EventLogLimits(entries: logLength, retention: .seconds(70))))
    }

    /// read-log.lua from `start` ("<id>" inclusive, "(<id>" exclusive).
    func readLog(_ log: String, from start: String) async throws -> RESPValue {
        try await scripts.run(.readLog, keys: [log], arguments: [start])
    }

    /// A stream's entries: id and flat field list.
    func log(_ key: String) async throws -> [(id: String, fields: [String])] {
        (try await redis.send(["XRANGE", key, "-", "+"]).array ?? []).compactMap { entry in
            guard let parts = entry.array, parts.count == 2, let id = parts[0].string else { return nil }
            return (id, (parts[1].array ?? []).compactMap(\.string))
        }
    }

    func hash(_ key: String) async throws -> [String: String] {
        let flat = try await redis.send(["HGETALL", key]).array ?? []
        var result: [String: String] = [:]
        for i in stride(from: 0, to: flat.count, by: 2) { result[flat[i].string!] = flat[i + 1].string! }
        return result
    }

    /// A join's or leave's reply as its parts, a member per line: `{status, entry id, user JSON
    /// lines}`, or `{status, entry id}` with the members read in the same transaction
    /// (`[script reply, HVALS]`, see `raw`).
    static func snapshot(_ reply: RESPValue) -> (status: Int, entry: String, members: [String])? {
        var (script, read) = (reply, [String]())
        if let parts = reply.array, parts.count == 2, parts[0].array != nil {
            (script, read) = (parts[0], parts[1].array?.compactMap(\.string) ?? [])
        }
        guard let parts = script.array, let status = parts.first?.int, parts.count >= 2, let entry = parts[1].string else { return nil }
        guard parts.count == 3 else { return (status, entry, read) }
        let lines = parts[2].string ?? ""
        return (status, entry, lines.isEmpty ? [] : lines.split(separator: "\n").map(String.init))
    }

    func allKeys() async throws -> [String] {
        (try await redis.send(["KEYS", "*"]).array ?? []).compactMap(\.string).sorted()
    }

    static func user(_ id: String) -> String { #"{"id":"\#(id)","username":"user-\#(id)"}"# }
    static func peerUser(_ id: String) -> PeerUser { PeerUser(id: PeerID(id)!, username: "user-\(id)") }
}

/// Messages received so far, shared with the task that receives them.
private final class Inbox: Sendable {
    let messages = NIOLockedValueBox<[(channel: String, payload: String)]>([])
}
