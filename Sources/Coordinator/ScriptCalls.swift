import LuaScripts
import NIOCore
import RedisClient

/// The return codes of the scripts (`Lua/include/codes.lua`), one meaning each.
enum ScriptCode: Int {
    case noSession = -1
    case notMember = -2
    case alreadyMember = -3
    case roomFull = -4
    case tooManyRooms = -5
    case noSharedRoom = -6
    case logTrimmed = -7
}

/// A script answered what its header does not allow: Swift and Lua disagree, a bug.
public struct UnexpectedScriptReply: Error, CustomStringConvertible {
    public let script: String
    public let reply: String
    public var description: String { "\(script).lua answered \(reply), which its header does not allow" }
}

/// One call of one Lua script: its KEYS and ARGV, built from the key space in one place, and
/// its reply decoded into what it means. The header of each script says the same in Lua.
protocol ScriptCall: Sendable {
    associatedtype Reply: Sendable
    static var script: LuaScript { get }
    var keys: [String] { get }
    var arguments: [String] { get }
    /// The reply's meaning; nil if the header does not allow it.
    static func decode(_ reply: RESPValue) -> Reply?
}

extension ScriptCall {
    var call: ScriptRegistry.Call { .init(Self.script, keys: keys, arguments: arguments) }

    func decoded(_ reply: RESPValue) throws -> Reply {
        guard let reply = Self.decode(reply) else { throw UnexpectedScriptReply(script: Self.script.name, reply: "\(reply)") }
        return reply
    }
}

extension RESPValue {
    /// The return code, if the reply is one.
    fileprivate var code: ScriptCode? { int.flatMap(ScriptCode.init(rawValue:)) }
}

/// How long the event logs are kept: the last two arguments of every script that writes one.
struct EventLogLimits: Sendable {
    /// Entries kept (approximately: Redis trims whole blocks).
    var entries: Int
    /// Kept this long after the last write.
    var retention: Duration

    var arguments: [String] { [String(entries), String(retention.inMilliseconds)] }
}

/// connect.lua: makes a new stream the peer's current one.
struct ConnectCall: ScriptCall {
    static let script = LuaScript.connect
    let keys: [String]
    let arguments: [String]

    init(_ space: KeySpace, user: PeerUser, session: String, node: String, resume: Bool) {
        keys = [space.peer(user.id), space.peerLog(user.id)]
        arguments = [session, node, user.json, space.channel(user.id), resume ? "resume" : "fresh"]
    }

    /// Whether the stream took over the peer's existing session.
    static func decode(_ reply: RESPValue) -> Bool? {
        guard let parts = reply.array, parts.count == 2, let resumed = parts[0].int, resumed == 0 || resumed == 1 else { return nil }
        return resumed == 1
    }
}

/// join.lua: adds a member to a room and introduces it to every member.
struct JoinCall: ScriptCall {
    static let script = LuaScript.join
    let keys: [String]
    let arguments: [String]

    init(_ space: KeySpace, room: RoomID, user: PeerUser, maxRoomSize: Int, log: EventLogLimits) {
        keys = [space.roomMembers(room), space.roomLog(room)]
        arguments = [room.rawValue, user.id.rawValue, user.json, space.channelPrefix, String(maxRoomSize)] + log.arguments
    }

    enum Reply: Sendable, Equatable {
        case joined(members: Int)
        case alreadyMember
        case roomFull
    }

    static func decode(_ reply: RESPValue) -> Reply? {
        if let members = reply.int, members >= 0 { return .joined(members: members) }
        switch reply.code {
        case .alreadyMember: return .alreadyMember
        case .roomFull: return .roomFull
        default: return nil
        }
    }
}

/// remember-room.lua: records on the peer the room join.lua added it to.
struct RememberRoomCall: ScriptCall {
    static let script = LuaScript.rememberRoom
    let keys: [String]
    let arguments: [String]

    init(_ space: KeySpace, peer: PeerID, room: RoomID, maxRooms: Int) {
        keys = [space.peer(peer), space.peerRooms(peer)]
        arguments = [room.rawValue, String(maxRooms)]
    }

    enum Reply: Sendable, Equatable {
        case recorded
        case noSession
        case tooManyRooms
    }

    static func decode(_ reply: RESPValue) -> Reply? {
        if reply.int == 1 { return .recorded }
        switch reply.code {
        case .noSession: return .noSession
        case .tooManyRooms: return .tooManyRooms
        default: return nil
        }
    }
}

/// leave.lua: takes a member out of a room and tells the others.
struct LeaveCall: ScriptCall {
    static let script = LuaScript.leave
    let keys: [String]
    let arguments: [String]

    init(_ space: KeySpace, room: RoomID, peer: PeerID, tellLeaver: Bool, log: EventLogLimits) {
        keys = [space.roomMembers(room), space.roomLog(room)]
        arguments = [room.rawValue, peer.rawValue, space.channelPrefix, tellLeaver ? "1" : "0"] + log.arguments
    }

    enum Reply: Sendable, Equatable {
        case left(remaining: Int)
        case notMember
    }

    static func decode(_ reply: RESPValue) -> Reply? {
        if let remaining = reply.int, remaining >= 0 { return .left(remaining: remaining) }
        return reply.code == .notMember ? .notMember : nil
    }
}

/// disconnect.lua: ends a peer's session and hands back its rooms.
struct DisconnectCall: ScriptCall {
    static let script = LuaScript.disconnect
    let keys: [String]
    let arguments: [String]

    /// - Parameter session: the session to end; nil for whatever session the peer has.
    init(_ space: KeySpace, peer: PeerID, session: String?) {
        keys = [space.peer(peer), space.peerRooms(peer), space.peerLog(peer)]
        arguments = [session ?? ""]
    }

    enum Reply: Sendable, Equatable {
        /// Ended (or replaced by a newer stream: then no rooms); the rooms to leave.
        case ended(rooms: [RoomID])
        case noSession
    }

    static func decode(_ reply: RESPValue) -> Reply? {
        if let rooms = reply.array {
            let ids = rooms.compactMap { $0.string.flatMap(RoomID.init) }
            return ids.count == rooms.count ? .ended(rooms: ids) : nil
        }
        return reply.code == .noSession ? .noSession : nil
    }
}

/// relay.lua: logs and publishes a relay to its target, if they share a room.
struct RelayCall: ScriptCall {
    static let script = LuaScript.relay
    let keys: [String]
    let arguments: [String]

    init(_ space: KeySpace, target: PeerID, event: EventName, data: String, senderRooms: [String], log: EventLogLimits) {
        keys = [space.peer(target), space.peerRooms(target), space.peerLog(target)]
        arguments = [target.rawValue, space.channel(target), event.rawValue, data] + log.arguments + senderRooms
    }

    enum Reply: Sendable, Equatable {
        /// Published; this many nodes received it (0: the target has no stream now, the
        /// message waits in its log).
        case published(receivers: Int)
        case noSession
        case noSharedRoom
    }

    static func decode(_ reply: RESPValue) -> Reply? {
        if let receivers = reply.int, receivers >= 0 { return .published(receivers: receivers) }
        switch reply.code {
        case .noSession: return .noSession
        case .noSharedRoom: return .noSharedRoom
        default: return nil
        }
    }
}

/// resume.lua: what a peer was sent in one log after a position.
struct ResumeCall: ScriptCall {
    static let script = LuaScript.resume
    let keys: [String]
    let arguments: [String]

    /// - Parameters:
    ///   - source: the room whose log to read; nil for the peer's own.
    ///   - position: the last position seen; nil for "since the peer's latest join".
    init(_ space: KeySpace, peer: PeerID, source: RoomID?, after position: LogPosition?) {
        keys = [source.map(space.roomLog) ?? space.peerLog(peer)]
        arguments = [peer.rawValue, position?.description ?? ""]
    }

    enum Reply: Sendable {
        /// Each message's position and `<event>\n<JSON>`, in log order.
        case missed([(position: LogPosition, message: ByteBuffer)])
        case logTrimmed
    }

    static func decode(_ reply: RESPValue) -> Reply? {
        if reply.code == .logTrimmed { return .logTrimmed }
        guard let fields = reply.array, fields.count % 2 == 0 else { return nil }
        var missed: [(LogPosition, ByteBuffer)] = []
        for index in stride(from: 0, to: fields.count, by: 2) {
            guard let position = fields[index].string.flatMap(LogPosition.init), case .bulkString(let message) = fields[index + 1] else {
                return nil
            }
            missed.append((position, message))
        }
        return .missed(missed)
    }
}

/// reassert.lua: puts back a session the node holds after Redis lost its data.
struct ReassertCall: ScriptCall {
    static let script = LuaScript.reassert
    let keys: [String]
    let arguments: [String]

    init(_ space: KeySpace, user: PeerUser, session: String, node: String, rooms: Set<RoomID>) {
        keys = [space.peer(user.id), space.peerRooms(user.id)]
        arguments = [session, node, user.json] + rooms.map(\.rawValue)
    }

    /// Whether the session was put back (false: Redis had one for the peer already).
    static func decode(_ reply: RESPValue) -> Bool? {
        switch reply.int {
        case 1: true
        case 0: false
        default: nil
        }
    }
}

extension ScriptRegistry {
    /// Runs one call and decodes its reply.
    func run<Call: ScriptCall>(_ call: Call) async throws -> Call.Reply {
        try call.decoded(try await run(Call.script, keys: call.keys, arguments: call.arguments))
    }

    /// Runs calls of one script in one round trip, in order.
    func run<Call: ScriptCall>(_ calls: [Call]) async throws -> [Call.Reply] {
        try zip(calls, try await run(calls.map(\.call))).map { try $0.decoded($1) }
    }

    /// Runs two calls in one round trip, in this order.
    func run<First: ScriptCall, Second: ScriptCall>(_ first: First, then second: Second) async throws -> (First.Reply, Second.Reply) {
        let replies = try await run([first.call, second.call])
        return (try first.decoded(replies[0]), try second.decoded(replies[1]))
    }
}
