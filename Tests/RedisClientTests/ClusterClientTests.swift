import NIOConcurrencyHelpers
import NIOCore
import RedisClient
import RedisServer
import Testing

@Suite("Cluster seeds")
struct ClusterSeedTests {
    @Test func seedsAreAddressesOrURLsWithOneSetOfCredentials() throws {
        let seeds = try RedisEndpoint.clusterSeeds("127.0.0.1:7000, redis://10.0.0.2:7001")
        #expect(seeds.map(\.address) == [.tcp(host: "127.0.0.1", port: 7000), .tcp(host: "10.0.0.2", port: 7001)])
        // Mixed credentials would log into some nodes and not others.
        #expect(throws: RedisEndpoint.InvalidURL.self) { try RedisEndpoint.clusterSeeds("127.0.0.1:7000,redis://:secret@10.0.0.2:7001") }
        let same = try RedisEndpoint.clusterSeeds("redis://u:p@a:1,redis://u:p@b:2")
        #expect(same.allSatisfy { $0.username == "u" && $0.password == "p" })
    }

    @Test func aDatabaseOrASocketIsRefused() {
        #expect(throws: RedisEndpoint.InvalidURL.self) { try RedisEndpoint.clusterSeeds("redis://127.0.0.1:7000/2") }
        #expect(throws: RedisEndpoint.InvalidURL.self) { try RedisEndpoint.clusterSeeds("redis://127.0.0.1:7000/0") }
        #expect(throws: RedisEndpoint.InvalidURL.self) { try RedisEndpoint.clusterSeeds("unix:///tmp/redis.sock") }
        #expect(throws: RedisEndpoint.InvalidURL.self) { try RedisEndpoint.clusterSeeds("") }
    }
}

@Suite("Redis client against a live Redis Cluster")
struct ClusterClientTests {
    /// Keys in many slots, written and read back through one client, land on every primary,
    /// each on the primary that owns its slot.
    @Test func everyCommandGoesToThePrimaryOfItsSlot() async throws {
        try await RedisCluster.with(replicasPerPrimary: 0) { cluster in
            let client = RedisClient(cluster: try RedisEndpoint.clusterSeeds(cluster.seeds))
            let keys = (0..<300).map { "key:\($0)" }
            let written = try await client.pipeline(keys.map { ["SET", $0, "v-\($0)"] })
            #expect(written.allSatisfy { $0 == .simpleString("OK") })
            for key in keys.prefix(20) { #expect(try await client.send(["GET", key]).string == "v-\(key)") }
            let read = try await client.pipeline(keys.map { ["GET", $0] })
            #expect(read.map(\.string) == keys.map { "v-\($0)" })

            // Each primary holds exactly the keys of its slots.
            let topology = try await client.topology()
            #expect(topology.primaries.count == 3)
            #expect(topology.coversEverySlot)
            var total = 0
            for primary in topology.primaries {
                guard case .tcp(_, let port) = primary.address, let server = cluster.server(port: port) else {
                    Issue.record("unknown primary \(primary)")
                    continue
                }
                let held = Int(try await server.command("DBSIZE").filter(\.isNumber)) ?? -1
                #expect(held == keys.filter { topology.owner(of: $0) == primary }.count)
                #expect(held > 0)
                total += held
            }
            #expect(total == keys.count)

            // A transaction runs on its slot's primary; a scan covers every primary.
            let replies = try await client.transaction([["SET", "{t}a", "1"], ["INCR", "{t}a"], ["GET", "{t}a"]])
            #expect(replies == [.simpleString("OK"), .integer(2), .bulkString(ByteBuffer(string: "2"))])
            #expect(try await client.keys(matching: "key:*").count == keys.count)
            await client.close()
        }
    }

    /// Fewer than three primaries (which `redis-cli --cluster create` refuses) are joined by
    /// hand: the baseline of the shard benchmarks.
    @Test func aClusterOfTwoPrimariesWithReplicasServesEverySlot() async throws {
        try await RedisCluster.with(primaries: 2, replicasPerPrimary: 1) { cluster in
            let client = RedisClient(cluster: try RedisEndpoint.clusterSeeds(cluster.seeds))
            let topology = try await client.topology()
            #expect(topology.primaries.count == 2 && topology.coversEverySlot)
            #expect(try await cluster.primaries().count == 2)
            let keys = (0..<50).map { "k\($0)" }
            _ = try await client.pipeline(keys.map { ["SET", $0, $0] })
            #expect(try await client.pipeline(keys.map { ["GET", $0] }).map(\.string) == keys)
            await client.close()
        }
    }

    /// While a slot migrates, a key already moved is reached with ASK and one still at the
    /// source at the source; once the slot has moved, MOVED updates the map. A subscriber of a
    /// channel in that slot is dropped by the old owner, follows the slot, and says it may have
    /// missed messages.
    @Test func aSlotThatMovesIsFollowedByCommandsAndSubscriptions() async throws {
        try await RedisCluster.with(replicasPerPrimary: 0) { cluster in
            let client = RedisClient(cluster: try RedisEndpoint.clusterSeeds(cluster.seeds))
            let interruptions = NIOLockedValueBox(0)
            let subscriber = RedisSubscriber(client: client, onInterrupted: { _ in interruptions.withLockedValue { $0 += 1 } })
            let running = Task { await subscriber.run() }
            defer { running.cancel() }
            await subscriber.waitUntilConnected()

            let slot = HashSlot.of("{moving}")
            let keys = (0..<10).map { "{moving}:\($0)" }
            for key in keys { try await client.send(["SET", key, key]) }
            try await subscriber.subscribe("{moving}:events")
            var messages = subscriber.messages.makeAsyncIterator()
            #expect(try await client.send(["SPUBLISH", "{moving}:events", "before"]) == .integer(1))
            #expect(await messages.next().map { String(buffer: $0.payload) } == "before")

            let source = try #require(try await cluster.owner(ofSlot: slot))
            let target = try #require(try await cluster.primaries().first { $0 !== source })
            let migration = try await cluster.beginMigration(ofSlot: slot, to: target)
            try await migration.moveKeys(5)
            // Half the keys are on the target (ASK), half still on the source.
            #expect(try await client.pipeline(keys.map { ["GET", $0] }).map(\.string) == keys)
            for key in keys { #expect(try await client.send(["GET", key]).string == key) }
            let before = interruptions.withLockedValue { $0 }

            try await migration.finish()
            #expect(try await client.pipeline(keys.map { ["GET", $0] }).map(\.string) == keys)
            guard case .tcp(_, let targetPort) = try await client.topology().owner(ofSlot: slot)?.address else {
                Issue.record("the slot has no owner")
                return
            }
            #expect(targetPort == target.tcpPort)

            // The old owner dropped the channel; the subscriber subscribed it at the new one.
            var receivers = 0
            for _ in 0..<100 where receivers == 0 {
                receivers = (try? await client.send(["SPUBLISH", "{moving}:events", "after"]).int) ?? 0
                if receivers == 0 { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(receivers == 1)
            #expect(await messages.next().map { String(buffer: $0.payload) } == "after")
            #expect(interruptions.withLockedValue { $0 } > before)
            #expect(subscriber.isConfirmed("{moving}:events"))
            await client.close()
        }
    }

    /// A subscriber holds one connection per primary and subscribes each channel where its
    /// slot lives.
    @Test func channelsAreSubscribedOnThePrimaryOfTheirSlot() async throws {
        try await RedisCluster.with(replicasPerPrimary: 0) { cluster in
            let client = RedisClient(cluster: try RedisEndpoint.clusterSeeds(cluster.seeds))
            let subscriber = RedisSubscriber(client: client)
            let running = Task { await subscriber.run() }
            defer { running.cancel() }
            await subscriber.waitUntilConnected()
            let channels = (0..<30).map { "{c\($0)}:events" }
            for channel in channels { try await subscriber.subscribe(channel) }
            var messages = subscriber.messages.makeAsyncIterator()
            for channel in channels { #expect(try await client.send(["SPUBLISH", channel, channel]) == .integer(1)) }
            var received: [String] = []
            for _ in channels { if let message = await messages.next() { received.append(String(buffer: message.payload)) } }
            #expect(Set(received) == Set(channels))
            // Each primary counts only its own channels.
            let topology = try await client.topology()
            for server in cluster.servers {
                let subscribed = try await server.command("PUBSUB", "SHARDCHANNELS").split(separator: "\n").map(String.init)
                let owned = channels.filter { topology.owner(of: $0)?.address == .tcp(host: "127.0.0.1", port: server.tcpPort ?? 0) }
                #expect(Set(subscribed) == Set(owned))
            }
            await client.close()
        }
    }

    /// A primary demoted by a manual failover and promoted again is seen anew. Redis keeps a
    /// client's connection open across both changes of role, so without more the connection
    /// opened before would be used again and nobody would learn that the server's history
    /// changed (what it had may not be what its replacement acknowledged meanwhile). Here the
    /// client follows the slot each time (`MOVED`), and the map that makes it a primary again
    /// retires its connections.
    @Test func aPrimaryPromotedAgainIsAskedWhoItIs() async throws {
        try await RedisCluster.with(primaries: 1, replicasPerPrimary: 1) { cluster in
            let (client, seen) = try Self.observingClient(of: cluster)
            let first = try #require(try await cluster.primaries().first)
            try await client.send(["SET", "k", "1"])
            let replica = try await cluster.failOver(first, .manual)
            try await client.send(["SET", "k", "2"])  // MOVED: the replica serves the slot now
            #expect(try await cluster.failOver(replica, .manual) === first)
            try await client.send(["SET", "k", "3"])  // MOVED back
            #expect(try await client.send(["GET", "k"]).string == "3")
            try await Self.expectSeenBeforeAndAfter(first, in: seen)
            await client.close()
        }
    }

    /// The same with nothing sent between the failovers: the client's map never changes, and
    /// the server is seen anew only when asked who it is (each heartbeat asks every primary).
    @Test func aPrimaryPromotedAgainWhileIdleIsSeenWhenAsked() async throws {
        try await RedisCluster.with(primaries: 1, replicasPerPrimary: 1) { cluster in
            let (client, seen) = try Self.observingClient(of: cluster)
            let first = try #require(try await cluster.primaries().first)
            try await client.send(["SET", "k", "1"])
            #expect(try await cluster.failOver(try await cluster.failOver(first, .manual), .manual) === first)
            await client.observeEachPrimary()
            try await Self.expectSeenBeforeAndAfter(first, in: seen)
            await client.close()
        }
    }

    typealias Observed = NIOLockedValueBox<[(address: RedisEndpoint.Address, identity: ServerIdentity)]>

    /// A client of the cluster, and every identity it is told of.
    static func observingClient(of cluster: RedisCluster) throws -> (RedisClient, Observed) {
        let client = RedisClient(cluster: try RedisEndpoint.clusterSeeds(cluster.seeds))
        let seen = Observed([])
        client.observeServers { endpoint, identity in seen.withLockedValue { $0.append((endpoint.address, identity)) } }
        return (client, seen)
    }

    /// `server` was seen as a primary with two histories, the last its present one.
    static func expectSeenBeforeAndAfter(_ server: RedisServerProcess, in seen: Observed) async throws {
        let address = RedisEndpoint.Address.tcp(host: "127.0.0.1", port: try #require(server.tcpPort))
        let asPrimary = seen.withLockedValue { $0.filter { $0.address == address && $0.identity.isPrimary }.map(\.identity) }
        #expect(Set(asPrimary.map(\.replicationID)).count == 2, "asked as a primary before and after: \(asPrimary)")
        let now = try await server.command("INFO", "replication")
        #expect(now.contains("master_replid:\(asPrimary.last?.replicationID ?? "?")"))
    }

    /// Once closed, the client opens nothing. A command on it fails, which starts a read of the
    /// map, and that read must not make a client for a seed not used before (the replica here),
    /// whose connection nothing would close.
    @Test func aClosedClientOpensNoConnection() async throws {
        try await RedisCluster.with(primaries: 1, replicasPerPrimary: 1) { cluster in
            let client = RedisClient(cluster: try RedisEndpoint.clusterSeeds(cluster.seeds))
            try await client.send(["SET", "k", "1"])
            let primary = try #require(try await cluster.primaries().first)
            let replica = try #require(try await cluster.replica(of: primary))
            // Ordinary clients but the one asking (redis-cli).
            func clients() async throws -> Int { try await replica.command("CLIENT", "LIST", "TYPE", "normal").split(separator: "\n").count - 1 }
            let before = try await clients()
            await client.close()
            await #expect(throws: (any Error).self) { try await client.send(["GET", "k"]) }
            try await Task.sleep(for: .milliseconds(500))  // for the read of the map it started
            #expect(try await clients() == before)
        }
    }
}
