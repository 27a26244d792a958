import RedisClient

extension Coordinator {
    public enum JoinOutcome: Sendable, Equatable {
        /// Joined; introduced to this many members.
        case joined(members: Int)
        case alreadyMember
    }

    /// The peer has no open stream, so it cannot be told who else is in the room.
    public struct NoOpenStream: Error, Sendable {}
    /// The room has `maxRoomSize` members.
    public struct RoomFull: Error, Sendable {}
    /// The peer is in `maxRoomsPerPeer` rooms.
    public struct TooManyRooms: Error, Sendable {}
}

/// Joins and leaves: join.lua on the room's keys then remember-room.lua on the peer's, leave.lua
/// then forget-room.lua, each pair safe to repeat, waiting through outages and the recovery
/// window. The one owner of the rule "no peer stays in a room without a session".
struct Rooms: Sendable {
    let context: NodeContext
    let gate: RecoveryGate
    let limits: Coordinator.RoomLimits

    /// Adds the peer to the room: it gets `add-peer` (offer: true) for every member and every
    /// member gets `add-peer` (offer: false) for it. Waits up to `membershipWait` through a
    /// Redis outage or recovery before it gives up with `RedisConnectionError`.
    func join(_ user: PeerUser, room: RoomID) async throws -> Coordinator.JoinOutcome {
        // Safe to repeat: a join that did reach Redis before its reply was lost comes back
        // as `alreadyMember`.
        try await Outage.retrying(until: .now + gate.membershipWait) { try await joinOnce(user, room: room) }
    }

    private func joinOnce(_ user: PeerUser, room: RoomID) async throws -> Coordinator.JoinOutcome {
        let peer = user.id
        // Refuse early what would be refused anyway, so members see no add-peer/remove-peer flicker.
        let known = gate.knownEpoch
        let checks = try await context.redis.pipeline([
            ["EXISTS", context.keys.peer(peer)], ["HLEN", context.keys.peerRooms(peer)],
            ["HEXISTS", context.keys.peerRooms(peer), room.rawValue],
        ] + gate.checks)
        try gate.refuseWhileRecovering(checks.suffix(gate.checks.count), knownEpoch: known)
        guard checks[0].int == 1 else {
            context.metrics.joined("no_stream")
            throw Coordinator.NoOpenStream()
        }
        if limits.maxRoomsPerPeer > 0, checks[2].int == 0, (checks[1].int ?? 0) >= limits.maxRoomsPerPeer {
            context.metrics.refused("too_many_rooms")
            throw Coordinator.TooManyRooms()
        }
        if checks[2].int == 1 {
            // Recorded on the peer: a member already, unless a leave stopped between leave.lua
            // and forget-room.lua. That leave is finished first (its farewells go out), so the
            // peer's view empties before the join fills it again.
            guard try await context.redis.send(["HEXISTS", context.keys.roomMembers(room), peer.rawValue]).int == 0 else {
                context.metrics.joined("already_member")
                return .alreadyMember
            }
            try await leaveRoom(room, peer: peer, tellLeaver: true)
        }
        // join.lua on the room's keys, then remember-room.lua on the peer's with the snapshot
        // read with it. The join is recorded on the peer only while it still has a stream (and
        // room to spare); otherwise it is undone below, so no ghost stays behind.
        let joined = try await context.scripts.run(
            JoinCall(context.keys, room: room, user: user, maxRoomSize: limits.maxRoomSize, log: context.logLimits))
        let snapshot: RoomSnapshot
        switch joined {
        case .roomFull:
            context.metrics.refused("room_full")
            throw Coordinator.RoomFull()
        case .joined(let taken), .alreadyMember(let taken):
            snapshot = taken
        }
        let remember = RememberRoomCall(
            context.keys, peer: peer, room: room, maxRooms: limits.maxRoomsPerPeer, snapshot: snapshot, log: context.logLimits)
        var recorded = try await context.scripts.run(remember)
        if case .joined = joined, recorded == .recordedBefore {
            // The peer still had the room recorded from a leave that stopped before
            // forget-room.lua: this join is new, and its introductions must go out.
            try await context.redis.send(["HDEL", context.keys.peerRooms(peer), room.rawValue])
            recorded = try await context.scripts.run(remember)
        }
        switch recorded {
        case .recorded:
            // (After `alreadyMember`: an earlier attempt stopped before remember-room.lua.)
            context.metrics.joined("joined")
            return .joined(members: snapshot.count)
        case .recordedBefore:
            context.metrics.joined("already_member")
            return .alreadyMember
        case .noSession, .tooManyRooms:
            // Not recorded on the peer, so no disconnect would take it out: undo the membership.
            try await leaveRoom(room, peer: peer, tellLeaver: false)
            if recorded == .tooManyRooms {
                context.metrics.refused("too_many_rooms")
                throw Coordinator.TooManyRooms()
            }
            context.metrics.joined("no_stream")
            throw Coordinator.NoOpenStream()
        }
    }

    /// Takes the peer out of the room: every remaining member gets `remove-peer` for it, and
    /// it gets `remove-peer` for each of them. Returns false if it was not a member. Waits
    /// through an outage as `join` does.
    @discardableResult
    func leave(_ user: PeerUser, room: RoomID) async throws -> Bool {
        let left = try await Outage.retrying(until: .now + gate.membershipWait) {
            try await gate.refuseWhileRecovering()
            return try await leaveRoom(room, peer: user.id, tellLeaver: true)
        }
        context.metrics.left(left ? "left" : "not_member")
        return left
    }

    /// leave.lua on the room's keys, then, for an explicit leave (`tellLeaver`), forget-room.lua
    /// on the peer's with the snapshot read with it; else the room is just forgotten on the
    /// peer (its stream is gone). Safe to repeat: a repeat finishes what an earlier attempt
    /// left undone. Returns false if the peer was not a member.
    @discardableResult
    func leaveRoom(_ room: RoomID, peer: PeerID, tellLeaver: Bool) async throws -> Bool {
        let left = try await context.scripts.run(LeaveCall(context.keys, room: room, peer: peer, snapshot: tellLeaver, log: context.logLimits))
        let (wasMember, snapshot) = switch left {
        case .left(let snapshot): (true, snapshot)
        case .notMember(let snapshot): (false, snapshot)
        }
        guard tellLeaver else {
            try await context.redis.send(["HDEL", context.keys.peerRooms(peer), room.rawValue])
            return wasMember
        }
        let forgotten = try await context.scripts.run(ForgetRoomCall(context.keys, peer: peer, room: room, snapshot: snapshot, log: context.logLimits))
        return wasMember || forgotten == .forgotten
    }
}
