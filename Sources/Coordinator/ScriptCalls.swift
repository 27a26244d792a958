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
    /// A read of the call's keys run with the script in one transaction, nothing between them:
    /// a snapshot the script would otherwise have to pass through Lua, at a cost per byte there.
    /// With one, `decode` is given `[the script's reply, the read's]`.
    var read: TransactionRead? { get }
    /// The reply's meaning; nil if the header does not allow it.
    func decode(_ reply: RESPValue) -> Reply?
}

/// A command run just before or just after a script, in one MULTI … EXEC with it.
struct TransactionRead: Sendable {
    let command: [String]
    let beforeScript: Bool
}

extension ScriptCall {
    var read: TransactionRead? { nil }

    var call: ScriptRegistry.Call { .init(Self.script, keys: keys, arguments: arguments) }

    func decoded(_ reply: RESPValue) throws -> Reply {
        guard let reply = decode(reply) else { throw UnexpectedScriptReply(script: Self.script.name, reply: "\(reply)") }
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
    func decode(_ reply: RESPValue) -> Bool? {
        guard let parts = reply.array, parts.count == 2, let resumed = parts[0].int, resumed == 0 || resumed == 1 else { return nil }
        return resumed == 1
    }
}

/// A room's members as of one entry of its log: the snapshot read with join.lua or leave.lua
/// (or, for a repeated one, returned by it).
struct RoomSnapshot: Sendable, Equatable {
    let position: EntryID
    /// The members' user JSON, one per line ("" for none): passed on to the peer's script as
    /// it came.
    let members: String

    /// The number of members in it.
    var count: Int { members.isEmpty ? 0 : members.utf8.reduce(1) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 } }

    /// A first join's or leave's `{number of members, entry id}` with the members read beside
    /// it (`HVALS`, nil if none was read): the number must match what was read.
    static func fresh(_ reply: RESPValue, members read: RESPValue?) -> RoomSnapshot? {
        guard let parts = reply.array, parts.count == 2, let count = parts[0].int, count >= 0,
            let position = parts[1].string.flatMap(EntryID.init)
        else { return nil }
        guard let read else { return RoomSnapshot(position: position, members: "") }
        guard let values = read.array, values.count == count else { return nil }
        let members = values.compactMap(\.string)
        return members.count == count ? RoomSnapshot(position: position, members: members.joined(separator: "\n")) : nil
    }

    /// Decodes `{status, entry id, user JSON lines}` into the status and the snapshot.
    static func decodeStatus(_ reply: RESPValue) -> (status: Int, snapshot: RoomSnapshot)? {
        guard let parts = reply.array, parts.count == 3, let status = parts[0].int,
            let position = parts[1].string.flatMap(EntryID.init), let members = parts[2].string
        else { return nil }
        return (status, RoomSnapshot(position: position, members: members))
    }
}

/// join.lua: adds a member to a room, atomically with a snapshot of who was there (read with
/// HVALS just before it, in the same transaction).
struct JoinCall: ScriptCall {
    static let script = LuaScript.join
    let keys: [String]
    let arguments: [String]

    init(_ space: KeySpace, room: RoomID, user: PeerUser, maxRoomSize: Int, log: EventLogLimits) {
        keys = [space.roomMembers(room), space.roomLog(room), space.roomJoins(room)]
        arguments = [space.channel(room), user.id.rawValue, user.json, String(maxRoomSize)] + log.arguments
    }

    var read: TransactionRead? { TransactionRead(command: ["HVALS", keys[0]], beforeScript: true) }

    enum Reply: Sendable, Equatable {
        /// Joined; the members it found, to introduce it to.
        case joined(RoomSnapshot)
        /// A member already; the other members now, in case an earlier attempt did not get to
        /// remember-room.lua.
        case alreadyMember(RoomSnapshot)
        case roomFull
    }

    /// `[join.lua's reply, the members just before it]`.
    func decode(_ reply: RESPValue) -> Reply? {
        guard let parts = reply.array, parts.count == 2 else { return nil }
        let (script, before) = (parts[0], parts[1])
        if script.code == .roomFull { return .roomFull }
        if let snapshot = RoomSnapshot.fresh(script, members: before) { return .joined(snapshot) }
        guard let (status, snapshot) = RoomSnapshot.decodeStatus(script), ScriptCode(rawValue: status) == .alreadyMember else { return nil }
        return .alreadyMember(snapshot)
    }
}

/// remember-room.lua: records on the peer the room join.lua added it to, and introduces it to
/// the members join.lua found.
struct RememberRoomCall: ScriptCall {
    static let script = LuaScript.rememberRoom
    let keys: [String]
    let arguments: [String]

    init(_ space: KeySpace, peer: PeerID, room: RoomID, maxRooms: Int, snapshot: RoomSnapshot, log: EventLogLimits) {
        keys = [space.peer(peer), space.peerRooms(peer), space.peerLog(peer)]
        arguments = [room.rawValue, String(maxRooms), space.channel(peer), snapshot.position.description] + log.arguments + [snapshot.members]
    }

    enum Reply: Sendable, Equatable {
        case recorded
        /// An earlier attempt recorded it: nothing was sent again.
        case recordedBefore
        case noSession
        case tooManyRooms
    }

    func decode(_ reply: RESPValue) -> Reply? {
        switch reply.int {
        case 1: return .recorded
        case 0: return .recordedBefore
        default: break
        }
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
    private let wantsSnapshot: Bool

    /// - Parameter snapshot: whether to return the remaining members (to tell the leaver).
    init(_ space: KeySpace, room: RoomID, peer: PeerID, snapshot: Bool, log: EventLogLimits) {
        keys = [space.roomMembers(room), space.roomLog(room), space.roomJoins(room)]
        arguments = [space.channel(room), peer.rawValue, snapshot ? "1" : "0"] + log.arguments
        wantsSnapshot = snapshot
    }

    var read: TransactionRead? { wantsSnapshot ? TransactionRead(command: ["HVALS", keys[0]], beforeScript: false) : nil }

    enum Reply: Sendable, Equatable {
        /// Left; the members that remain (empty unless asked for).
        case left(RoomSnapshot)
        /// Not a member; the members now (empty unless asked for), in case an earlier attempt
        /// did not get to forget-room.lua.
        case notMember(RoomSnapshot)
    }

    /// leave.lua's reply; with a snapshot, `[its reply, the members just after it]`.
    func decode(_ reply: RESPValue) -> Reply? {
        var (script, after): (RESPValue, RESPValue?) = (reply, nil)
        if wantsSnapshot {
            guard let parts = reply.array, parts.count == 2 else { return nil }
            (script, after) = (parts[0], parts[1])
        }
        if let snapshot = RoomSnapshot.fresh(script, members: after) { return .left(snapshot) }
        guard let (status, snapshot) = RoomSnapshot.decodeStatus(script), ScriptCode(rawValue: status) == .notMember else { return nil }
        return .notMember(snapshot)
    }
}

/// forget-room.lua: forgets on the peer a room it left, and tells it who remained.
struct ForgetRoomCall: ScriptCall {
    static let script = LuaScript.forgetRoom
    let keys: [String]
    let arguments: [String]

    init(_ space: KeySpace, peer: PeerID, room: RoomID, snapshot: RoomSnapshot, log: EventLogLimits) {
        keys = [space.peer(peer), space.peerRooms(peer), space.peerLog(peer)]
        arguments = [room.rawValue, space.channel(peer), snapshot.position.description] + log.arguments + [snapshot.members]
    }

    enum Reply: Sendable, Equatable {
        case forgotten
        /// The peer had no such room: nothing sent.
        case notRecorded
        /// The peer has no session: the room is forgotten, nobody was told.
        case noSession
    }

    func decode(_ reply: RESPValue) -> Reply? {
        switch reply.int {
        case 1: return .forgotten
        case 0: return .notRecorded
        default: return reply.code == .noSession ? .noSession : nil
        }
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

    func decode(_ reply: RESPValue) -> Reply? {
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
    private(set) var keys: [String]
    private(set) var arguments: [String]

    /// Where the script finds the sender's rooms.
    enum SenderRooms: Sendable {
        /// In the sender's rooms hash, read by the script (a single Redis: any key is at hand).
        case read(of: PeerID)
        /// As read by the node just before (a cluster: the sender's keys are in another slot).
        case given([String])
    }

    init(_ space: KeySpace, target: PeerID, event: EventName, data: String, senderRooms: SenderRooms, log: EventLogLimits) {
        keys = [space.peer(target), space.peerRooms(target), space.peerLog(target)]
        arguments = [space.channel(target), event.rawValue, data] + log.arguments
        switch senderRooms {
        case .read(let sender): keys.append(space.peerRooms(sender))
        case .given(let rooms): arguments += rooms
        }
    }

    enum Reply: Sendable, Equatable {
        /// Published; this many nodes received it (0: the target has no stream now, the
        /// message waits in its log).
        case published(receivers: Int)
        case noSession
        case noSharedRoom
    }

    func decode(_ reply: RESPValue) -> Reply? {
        if let receivers = reply.int, receivers >= 0 { return .published(receivers: receivers) }
        switch reply.code {
        case .noSession: return .noSession
        case .noSharedRoom: return .noSharedRoom
        default: return nil
        }
    }
}

/// read-log.lua: one event log from a position on.
struct ReadLogCall: ScriptCall {
    static let script = LuaScript.readLog
    let keys: [String]
    let arguments: [String]
    let source: Inbound.Source

    /// Reads `source`'s log (a room's, or the peer's own) after `entry`, or from it on with
    /// `including` (the peer's own log, where an entry may hold events not all delivered).
    init(_ space: KeySpace, peer: PeerID, source: Inbound.Source, after entry: EntryID, including: Bool = false) {
        switch source {
        case .own: keys = [space.peerLog(peer)]
        case .room(let room): keys = [space.roomLog(room)]
        }
        arguments = [(including ? "" : "(") + entry.description]
        self.source = source
    }

    enum Reply: Sendable {
        /// Each entry's id and message, in log order (a message this node cannot read, say of
        /// a newer version, is skipped).
        case entries([(entry: EntryID, message: LogMessage)])
        case logTrimmed
    }

    func decode(_ reply: RESPValue) -> Reply? {
        if reply.code == .logTrimmed { return .logTrimmed }
        guard let fields = reply.array, fields.count % 2 == 0 else { return nil }
        var entries: [(EntryID, LogMessage)] = []
        for index in stride(from: 0, to: fields.count, by: 2) {
            guard let entry = fields[index].string.flatMap(EntryID.init), case .bulkString(let text) = fields[index + 1] else {
                return nil
            }
            if let message = LogMessage(text) { entries.append((entry, message)) }
        }
        return .entries(entries)
    }

    /// The entries as a stream takes them in.
    func inbound(_ reply: Reply) -> [Inbound]? {
        guard case .entries(let entries) = reply else { return nil }
        return entries.map { Inbound(source: source, entry: $0.entry, message: $0.message) }
    }
}

/// reassert.lua: puts back a session the node holds after Redis lost its data.
struct ReassertCall: ScriptCall {
    static let script = LuaScript.reassert
    let keys: [String]
    let arguments: [String]

    /// - Parameter rooms: the rooms the stream follows, with its position in each.
    init(_ space: KeySpace, user: PeerUser, session: String, node: String, rooms: [RoomID: EntryID]) {
        keys = [space.peer(user.id), space.peerRooms(user.id)]
        arguments = [session, node, user.json] + rooms.flatMap { [$0.key.rawValue, $0.value.description] }
    }

    enum Outcome: Equatable {
        /// Redis had lost the session: it is back, with the rooms.
        case putBack
        /// Redis still has this session (any of its rooms it had lost are recorded again).
        case stillThere
        /// Redis has a newer session for the peer: this stream is being replaced.
        case superseded
    }

    func decode(_ reply: RESPValue) -> Outcome? {
        switch reply.int {
        case 1: .putBack
        case 2: .stillThere
        case 0: .superseded
        default: nil
        }
    }
}

extension ScriptRegistry {
    /// The call's reply as `decode` takes it (with its transaction's read, if it has one).
    func reply(_ call: some ScriptCall) async throws -> RESPValue {
        guard let read = call.read else { return try await run(type(of: call).script, keys: call.keys, arguments: call.arguments) }
        let (script, readReply) = try await run(call.call, reading: read.command, beforeScript: read.beforeScript)
        return .array([script, readReply])
    }

    /// Runs one call and decodes its reply.
    func run<Call: ScriptCall>(_ call: Call) async throws -> Call.Reply {
        try call.decoded(try await reply(call))
    }

    /// Runs calls of one script in one round trip, in order.
    func run<Call: ScriptCall>(_ calls: [Call]) async throws -> [Call.Reply] {
        precondition(calls.allSatisfy { $0.read == nil }, "calls with a transaction's read run one at a time")
        return try zip(calls, try await run(calls.map(\.call))).map { try $0.decoded($1) }
    }
}
