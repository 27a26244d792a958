import Foundation
import SignalingClient
import Testing

@Suite("Join storms and churn across two nodes")
struct JoinStormTests {
    static let clients = 50
    static let rounds = 20

    /// Reads signal events until `done` says the view is complete, then proves nothing else
    /// arrives: a marker relay sent afterwards must be the very next event.
    static func settle(
        _ participant: Participant, room: String, fleet: Fleet, marker: String, done: (RoomView) -> Bool
    ) async throws -> RoomView {
        var view = RoomView()
        while !done(view) {
            guard let event = await nextSignal(participant.stream) else { break }
            if event.event == "add-peer" || event.event == "remove-peer", RoomView.roomID(of: event) != room {
                continue
            }
            view.apply(event)
        }
        let sent = try await fleet.client(0).request(.POST, "/relay/\(participant.id)/\(marker)", token: participant.token, body: "{}")
        #expect(sent.status == 200)
        while let event = await nextSignal(participant.stream), event.event != marker {
            view.apply(event)  // anything here is a duplicate or an extra: it shows up as a violation
        }
        return view
    }

    @Test(arguments: RedisKind.allCases) func fiftyClientsJoinOneRoomAtOnceTwentyTimes(on kind: RedisKind) async throws {
        // Every client stays in every round's room.
        try await Fleet.with(nodes: 2, on: kind, limits: .init(maxRoomSize: 100, maxRoomsPerPeer: Self.rounds)) { fleet in
            var participants: [Participant] = []
            for i in 0..<Self.clients {
                participants.append(try await Participant.connect("p\(i)", fleet: fleet, node: i % 2))
            }
            var tally = PairTally()
            for round in 0..<Self.rounds {
                let room = "storm-\(round)"
                // Everyone at once, each through a node chosen at random (no sticky sessions).
                let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                    for participant in participants {
                        group.addTask {
                            try await fleet.client(Int.random(in: 0...1)).request(.POST, "/\(room)/join", token: participant.token).status
                        }
                    }
                    return try await group.reduce(into: [Int]()) { $0.append($1) }
                }
                #expect(statuses.allSatisfy { $0 == 200 })
                let views = try await withThrowingTaskGroup(of: (String, RoomView).self) { group in
                    for participant in participants {
                        group.addTask {
                            let view = try await Self.settle(participant, room: room, fleet: fleet, marker: "end-\(round)") {
                                $0.added.count >= Self.clients - 1
                            }
                            return (participant.id, view)
                        }
                    }
                    return try await group.reduce(into: [String: RoomView]()) { $0[$1.0] = $1.1 }
                }
                for view in views.values { #expect(view.violations.isEmpty, "\(view.violations)") }
                let ids = participants.map(\.id)
                tally.add(views: views, ids: ids)
                #expect(try await fleet.roomMembers(room) == Set(ids))
            }
            print("join storm on \(kind): \(Self.clients) clients, 2 nodes, \(Self.rounds) rounds, \(tally)")
            #expect(try await fleet.classicPublishesOnTheBus() == 0)
            #expect(tally.pairs == Self.rounds * Self.clients * (Self.clients - 1) / 2)
            #expect(tally.misses == 0)
            #expect(tally.duplicates == 0)
            #expect(tally.bothOffer == 0)
            #expect(tally.neitherOffer == 0)
            participants.forEach { $0.stream.close() }
            #expect(try await fleet.eventually { try await fleet.signalingKeys() == [] })
        }
    }

    @Test(arguments: 0..<5)
    func halfDisconnectWhileTheOthersJoin(round: Int) async throws {
        try await Fleet.with(nodes: 2) { fleet in
            var participants: [Participant] = []
            for i in 0..<Self.clients {
                participants.append(try await Participant.connect("c\(i)", fleet: fleet, node: i % 2))
            }
            let room = "churn"
            let stayers = Array(participants[0..<(Self.clients / 2)])
            let leavers = Array(participants[(Self.clients / 2)...])
            // Leavers send their join and drop their stream at the same moment, so joins and
            // disconnects race inside Redis; stayers join meanwhile.
            let leaverStatuses = try await withThrowingTaskGroup(of: Int?.self) { group in
                for participant in stayers {
                    group.addTask {
                        let status = try await fleet.client(Int.random(in: 0...1)).request(.POST, "/\(room)/join", token: participant.token).status
                        #expect(status == 200)
                        return nil
                    }
                }
                for participant in leavers {
                    group.addTask {
                        async let join = fleet.client(Int.random(in: 0...1)).request(.POST, "/\(room)/join", token: participant.token)
                        try await Task.sleep(for: .microseconds(Int.random(in: 0...60_000)))
                        participant.stream.close()
                        let status = try await join.status
                        #expect(status == 200 || status == 409)  // 409: its stream was already gone
                        return status
                    }
                }
                return try await group.reduce(into: [Int]()) { if let status = $1 { $0.append(status) } }
            }
            let stayerIDs = Set(stayers.map(\.id))
            // No ghosts: once the disconnects are cleaned up, the room is exactly the stayers.
            let clean = try await fleet.eventually {
                for leaver in leavers where try await !fleet.keys(matching: "sb:peer:{\(leaver.id)}*").isEmpty { return false }
                return try await fleet.roomMembers(room) == stayerIDs
            }
            #expect(clean)
            #expect(try await fleet.roomMembers(room) == stayerIDs)
            // Every survivor's view is the room, reached without a remove before an add.
            var ghosts = 0
            for stayer in stayers {
                let expected = stayerIDs.subtracting([stayer.id])
                let view = try await Self.settle(stayer, room: room, fleet: fleet, marker: "end") { Set($0.peers.keys) == expected }
                #expect(view.violations.isEmpty, "\(view.violations)")
                #expect(Set(view.peers.keys) == expected)
                ghosts += Set(view.peers.keys).subtracting(expected).count
            }
            let joinedFirst = leaverStatuses.filter { $0 == 200 }.count
            print("churn round \(round): \(stayers.count) stay, \(leavers.count) drop mid-join (\(joinedFirst) joins answered 200, \(leavers.count - joinedFirst) 409): ghosts in Redis after clean-up: \(clean ? 0 : -1), in survivors' views: \(ghosts)")
            stayers.forEach { $0.stream.close() }
            #expect(try await fleet.eventually { try await fleet.signalingKeys() == [] })
        }
    }
}
