@testable import Coordinator
import Foundation
import SignalingClient
import Testing

/// What one join costs Redis in publishes, counted by Redis itself (`INFO commandstats` counts
/// the commands scripts run), across two nodes.
@Suite("A join's fan-out")
struct FanOutTests {
    /// One publish on the room's channel and one on the joiner's, whatever the room's size:
    /// the member nodes turn the room's one message into each member's add-peer.
    @Test(arguments: [2, 10, 100]) func aJoinPublishesTwiceWhateverTheRoomsSize(size: Int) async throws {
        // A heartbeat longer than the test: no subscription probe is published in the window.
        try await Fleet.with(nodes: 2, limits: .init(maxRoomSize: 100), heartbeatInterval: .seconds(600)) { fleet in
            var members: [Participant] = []
            for index in 0..<(size - 1) {
                let member = try await Participant.connect("m\(index)", fleet: fleet, node: index % 2)
                #expect(try await fleet.client(index % 2).request(.POST, "/room/join", token: member.token).status == 200)
                members.append(member)
            }
            let joiner = try await Participant.connect("joiner", fleet: fleet, node: 0)
            _ = try await fleet.redis.send(["CONFIG", "RESETSTAT"])
            #expect(try await fleet.client(1).request(.POST, "/room/join", token: joiner.token).status == 200)
            // After the join has reached everyone: the joiner its introductions, each member its add-peer.
            var introduced = 0
            while introduced < size - 1, let event = await nextSignal(joiner.stream) {
                if event.event == "add-peer" { introduced += 1 }
            }
            #expect(introduced == size - 1)
            for member in members {
                var told = false
                while !told, let event = await nextSignal(member.stream) {
                    told = event.event == "add-peer" && event.data.contains(joiner.id)
                }
                #expect(told)
            }
            let stats = try await fleet.redis.send(["INFO", "commandstats"]).string ?? ""
            func calls(_ command: String) -> Int {
                stats.split(whereSeparator: \.isNewline).first { $0.hasPrefix("cmdstat_\(command):") }
                    .flatMap { Int($0.split(separator: "=")[1].split(separator: ",")[0]) } ?? 0
            }
            #expect(calls("spublish") == 2, "\(stats)")
            #expect(calls("publish") == 0)
            // join.lua and remember-room.lua, and no read of the room's log: the joiner's node
            // listened to the room already (for m0), so it caught up from what came on the channel.
            #expect(calls("evalsha") == 2, "\(stats)")
            for participant in members + [joiner] { participant.stream.close() }
        }
    }

    /// A leave that stopped between leave.lua and forget-room.lua (its node died, say): the
    /// leaver's next join into the room finishes it first, so its view empties before the
    /// join fills it again, and nobody sees an add-peer twice.
    @Test func aJoinFinishesALeaveThatStoppedHalfway() async throws {
        try await Fleet.with(nodes: 2) { fleet in
            let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
            let bob = try await Participant.connect("bob", fleet: fleet, node: 1)
            for peer in [ann, bob] { #expect(try await fleet.client(peer.node).request(.POST, "/r/join", token: peer.token).status == 200) }
            #expect(await nextSignal(bob.stream)?.event == "add-peer")
            #expect(await nextSignal(ann.stream)?.event == "add-peer")
            // leave.lua alone, as the first half of ann's leave.
            let coordinator = fleet.nodes[0].coordinator
            let logs = EventLogLimits(entries: 1000, retention: .seconds(70))
            let left = try await coordinator.scripts.run(
                LeaveCall(coordinator.keys, room: RoomID("r")!, peer: PeerID(ann.id)!, snapshot: true, log: logs))
            guard case .left = left else {
                Issue.record("\(left)")
                return
            }
            #expect(await nextSignal(bob.stream)?.event == "remove-peer")

            #expect(try await fleet.client(1).request(.POST, "/r/join", token: ann.token).status == 200)
            func label(_ event: ServerSentEvent?) -> String {
                "\(event?.event ?? "nothing") \(((json(event?.data ?? "")["peer"] as? [String: Any])?["username"] as? String) ?? "")"
            }
            #expect(label(await nextSignal(ann.stream)) == "remove-peer bob")
            #expect(label(await nextSignal(ann.stream)) == "add-peer bob")
            #expect(label(await nextSignal(bob.stream)) == "add-peer ann")
            // Nothing else: a marker relayed to each now is the next event it sees.
            #expect(try await fleet.client(0).request(.POST, "/relay/\(ann.id)/marker", token: bob.token, body: "{}").status == 200)
            #expect(try await fleet.client(0).request(.POST, "/relay/\(bob.id)/marker", token: ann.token, body: "{}").status == 200)
            #expect(await nextSignal(ann.stream)?.event == "marker")
            #expect(await nextSignal(bob.stream)?.event == "marker")
        }
    }
}
