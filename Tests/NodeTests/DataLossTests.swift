import Foundation
import RedisClient
import RedisServer
import SignalingClient
import Testing

/// Redis loses only some of its data: a failover to a replica that was behind keeps most keys,
/// the epoch among them, and silently drops the last writes; on a cluster one shard restarts
/// empty while the others keep everything. The nodes notice the server's new identity and put
/// back what they hold there: rooms are as they were, with no churn.
@Suite("Partial data loss: a lagging replica, one shard")
struct DataLossTests {
    /// One redis-server behind an address that moves (a virtual IP, a proxy) to its replica,
    /// which stopped replicating before the last joins and connects.
    @Test func aFailoverToALaggingReplicaLosesNothingTheNodesHold() async throws {
        let (primaryPort, replicaPort) = (try RedisServerProcess.freePort(), try RedisServerProcess.freePort())
        try await RedisServerProcess.with(tcpPort: primaryPort) { primary in
            try await RedisServerProcess.with(tcpPort: replicaPort, extraArguments: ["--replicaof", "127.0.0.1", String(primaryPort)]) { replica in
                let proxy = try await SwitchingProxy.start(upstreamPort: primaryPort)
                defer { proxy.stop() }
                try await Fleet.with(nodes: 2, redisURL: "redis://127.0.0.1:\(proxy.port)", gracePeriod: .seconds(30), heartbeatInterval: .seconds(1)) { fleet in
                    let ann = try await Participant.connect("ann", fleet: fleet, node: 0)
                    let bob = try await Participant.connect("bob", fleet: fleet, node: 1)
                    for peer in [ann, bob] { #expect(try await fleet.client(0).request(.POST, "/r/join", token: peer.token).status == 200) }
                    for peer in [ann, bob] { #expect(await nextSignal(peer.stream)?.event == "add-peer") }
                    // The replica has all of it, then stops following: what comes next is lost.
                    #expect(try await primary.command("WAIT", "1", "5000").contains("1"))
                    try await replica.command("REPLICAOF", "NO", "ONE")
                    let carol = try await Participant.connect("carol", fleet: fleet, node: 1)
                    #expect(try await fleet.client(0).request(.POST, "/r/join", token: carol.token).status == 200)
                    #expect(try await fleet.client(1).request(.POST, "/s/join", token: ann.token).status == 200)
                    #expect(try await fleet.client(1).request(.POST, "/s/join", token: carol.token).status == 200)
                    for _ in 0..<3 { #expect(await nextSignal(carol.stream)?.event == "add-peer") }
                    for peer in [ann, bob, ann] { #expect(await nextSignal(peer.stream)?.event == "add-peer") }
                    let epoch = try await primary.command("GET", "sb:{fleet}:epoch")

                    // The address moves to the replica; the primary is gone.
                    proxy.failOver(to: replicaPort)
                    await primary.kill()
                    #expect(try await replica.command("GET", "sb:{fleet}:epoch") == epoch, "the epoch survived: only the server's identity shows the loss")
                    #expect(try await fleet.eventually {
                        let (r, s) = (try await fleet.roomMembers("r"), try await fleet.roomMembers("s"))
                        return r == [ann.id, bob.id, carol.id] && s == [ann.id, carol.id]
                    })
                    // carol's session is back: relays reach her, and a newcomer meets all three.
                    #expect(try await fleet.eventually {
                        try await fleet.client(0).request(.POST, "/relay/\(carol.id)/note", token: bob.token, body: "{}").status == 200
                    })
                    #expect(await nextSignal(carol.stream)?.event == "note")
                    let dave = try await Participant.connect("dave", fleet: fleet, node: 0)
                    #expect(try await fleet.client(1).request(.POST, "/r/join", token: dave.token).status == 200)
                    var met: Set<String> = []
                    for _ in 0..<3 {
                        if let event = await nextSignal(dave.stream), event.event == "add-peer",
                            let id = (json(event.data)["peer"] as? [String: Any])?["id"] as? String
                        {
                            met.insert(id)
                        }
                    }
                    #expect(met == [ann.id, bob.id, carol.id])
                    // Nobody saw churn: the next thing each member hears is dave's arrival.
                    for peer in [ann, bob, carol] { #expect(await nextSignal(peer.stream)?.event == "add-peer") }
                    [ann, bob, carol, dave].forEach { $0.stream.close() }
                }
            }
        }
    }

    /// On a cluster, the primary of a room's slot restarts empty; the room's members, most of
    /// whose sessions live on other shards, are put back in it.
    @Test func aShardThatLosesEverythingIsPutBack() async throws {
        try await Fleet.with(nodes: 2, on: .cluster, gracePeriod: .seconds(30), heartbeatInterval: .seconds(1)) { fleet in
            var peers: [Participant] = []
            for index in 0..<6 { peers.append(try await Participant.connect("p\(index)", fleet: fleet, node: index % 2)) }
            for (index, peer) in peers.enumerated() {
                #expect(try await fleet.client(index + 1).request(.POST, "/lost/join", token: peer.token).status == 200)
            }
            for peer in peers { for _ in 0..<5 { #expect(await nextSignal(peer.stream)?.event == "add-peer") } }
            let ids = Set(peers.map(\.id))

            let shard = try #require(try await fleet.cluster.owner(ofSlot: HashSlot.of("{lost}")))
            let topology = try await fleet.redis.topology()
            let elsewhere = peers.filter { topology.owner(of: "sb:peer:{\($0.id)}")?.address != .tcp(host: "127.0.0.1", port: shard.tcpPort ?? 0) }
            #expect(!elsewhere.isEmpty, "some members' sessions live on other shards")
            try await shard.restart()
            #expect(try await fleet.cluster.waitUntilHealthy())
            #expect(try await fleet.eventually(seconds: 15) { try await fleet.roomMembers("lost") == ids })
            // Every session works: each peer gets a relay from its neighbour.
            for (index, peer) in peers.enumerated() {
                let sender = peers[(index + 1) % peers.count]
                #expect(try await fleet.eventually {
                    try await fleet.client(index).request(.POST, "/relay/\(peer.id)/note", token: sender.token, body: "{}").status == 200
                })
                #expect(await nextSignal(peer.stream)?.event == "note")
            }
            let newcomer = try await Participant.connect("newcomer", fleet: fleet, node: 0)
            #expect(try await fleet.client(1).request(.POST, "/lost/join", token: newcomer.token).status == 200)
            var met: Set<String> = []
            for _ in 0..<peers.count {
                if let event = await nextSignal(newcomer.stream), let id = (json(event.data)["peer"] as? [String: Any])?["id"] as? String {
                    met.insert(id)
                }
            }
            #expect(met == ids)
            (peers + [newcomer]).forEach { $0.stream.close() }
        }
    }
}
