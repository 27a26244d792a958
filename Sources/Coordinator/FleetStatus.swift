import Foundation
import RedisClient

/// What the node tells about itself and the fleet: readiness, the nodes' heartbeat records,
/// and the gauges of the rooms its peers are in.
struct FleetStatus: Sendable {
    let context: NodeContext
    let localStreams: LocalStreams

    /// What `/readyz` checks: every primary answers, every script is loaded, the subscription
    /// is live on every primary.
    func readiness() async -> [String: Bool] {
        let pings = (try? await context.redis.sendToEachPrimary(["PING"])) ?? []
        let redisUp = !pings.isEmpty && pings.allSatisfy { (try? $0.get()) == .simpleString("PONG") }
        if redisUp, !context.scripts.allLoaded { try? await context.scripts.loadAll() }
        return ["redis": redisUp, "scripts": context.scripts.allLoaded, "subscription": context.subscriber.isConnected]
    }

    /// The nodes with a live heartbeat record in Redis, as they described themselves.
    func fleet() async throws -> [[String: Any]] {
        let names = try await context.redis.keys(matching: context.keys.node("*"))
        guard !names.isEmpty else { return [] }
        let records = try await context.redis.pipeline(names.map { ["GET", $0] }).compactMap { value -> [String: Any]? in
            guard let text = value.string else { return nil }
            return try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        }
        return records.sorted { ($0["id"] as? String ?? "") < ($1["id"] as? String ?? "") }
    }

    /// Sets the gauges of rooms the peers of this node are in, and of their memberships, from
    /// Redis (for the metrics scrape: one pipelined HKEYS per local peer).
    func refreshMembershipGauges() async throws {
        let peers = Set(localStreams.all.map(\.user.id))
        guard !peers.isEmpty else {
            context.metrics.localRooms.record(0)
            context.metrics.localMemberships.record(0)
            return
        }
        let replies = try await context.redis.pipeline(peers.map { ["HKEYS", context.keys.peerRooms($0)] })
        var rooms = Set<String>()
        var memberships = 0
        for reply in replies {
            let ids = (reply.array ?? []).compactMap(\.string)
            memberships += ids.count
            rooms.formUnion(ids)
        }
        context.metrics.localRooms.record(rooms.count)
        context.metrics.localMemberships.record(memberships)
    }
}
