import Foundation

/// What one participant learned about one room from its `add-peer` / `remove-peer` events,
/// checked against DESIGN.md's guarantees as it goes.
public struct RoomView: Sendable {
    /// Peer id → offer flag of its add-peer, for the peers currently in view.
    public private(set) var peers: [String: Bool] = [:]
    /// Every add-peer received, in order.
    public private(set) var added: [(peer: String, offer: Bool)] = []
    /// Broken guarantees: an add-peer twice, a remove-peer before its add-peer.
    public private(set) var violations: [String] = []

    public init() {}

    public mutating func apply(_ event: ServerSentEvent) {
        let data = (try? JSONSerialization.jsonObject(with: Data(event.data.utf8))) as? [String: Any] ?? [:]
        guard let peer = (data["peer"] as? [String: Any])?["id"] as? String else {
            violations.append("event without a peer: \(event.event)")
            return
        }
        switch event.event {
        case "add-peer":
            let offer = data["offer"] as? Bool ?? false
            if peers[peer] != nil { violations.append("add-peer \(peer) twice") }
            peers[peer] = offer
            added.append((peer, offer))
        case "remove-peer":
            if peers.removeValue(forKey: peer) == nil { violations.append("remove-peer \(peer) before add-peer") }
        default:
            violations.append("unexpected \(event.event)")
        }
    }

    /// The room id of an `add-peer` / `remove-peer` event.
    public static func roomID(of event: ServerSentEvent) -> String? {
        let data = (try? JSONSerialization.jsonObject(with: Data(event.data.utf8))) as? [String: Any]
        return data?["roomId"] as? String
    }
}

/// Pairwise discovery over one room: for every pair, exactly one `offer:true` and one
/// `offer:false`, each exactly once.
public struct PairTally: Sendable, CustomStringConvertible {
    public var pairs = 0, misses = 0, duplicates = 0, bothOffer = 0, neitherOffer = 0

    public init() {}

    /// Adds every pair of `ids`, judged by what each one's view received.
    public mutating func add(views: [String: RoomView], ids: [String]) {
        for (i, a) in ids.enumerated() {
            for b in ids[(i + 1)...] {
                pairs += 1
                let aAboutB = views[a]?.added.filter { $0.peer == b } ?? []
                let bAboutA = views[b]?.added.filter { $0.peer == a } ?? []
                if aAboutB.isEmpty || bAboutA.isEmpty {
                    misses += 1
                    continue
                }
                if aAboutB.count > 1 || bAboutA.count > 1 { duplicates += 1 }
                switch (aAboutB[0].offer, bAboutA[0].offer) {
                case (true, true): bothOffer += 1
                case (false, false): neitherOffer += 1
                default: break
                }
            }
        }
    }

    public var description: String {
        "\(pairs) pairs: \(misses) misses, \(duplicates) duplicates, \(bothOffer) both-offer, \(neitherOffer) neither-offer"
    }
}
