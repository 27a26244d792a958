import Foundation
import SignalingClient

/// A simulated browser: token, id, open stream, and the node it streams from.
struct Peer: Sendable {
    let token: String
    let id: String
    let stream: EventStream
    let node: NodeAddress

    struct Failed: Error, CustomStringConvertible {
        let description: String
    }

    /// - Parameter reusing: the stream goes out on the connection that fetched its token.
    static func connect(name: String, node: NodeAddress, reusing: Bool = false) async throws -> Peer {
        let client = SignalingClient(host: node.host, port: node.port)
        let token: String
        let stream: EventStream
        if reusing {
            (token, stream) = try await client.accessThenConnect(username: name)
        } else {
            token = try await client.access(username: name)
            stream = try await client.connect(token: token)
        }
        guard let connected = await stream.next(), connected.event == "connected",
            let data = try? JSONSerialization.jsonObject(with: Data(connected.data.utf8)) as? [String: Any],
            let user = data["user"] as? [String: Any], let id = user["id"] as? String
        else { throw Failed(description: "no 'connected' event from \(node)") }
        return Peer(token: token, id: id, stream: stream, node: node)
    }

    /// Connects `count` peers spread round-robin over the nodes, `parallel` at a time.
    static func connectMany(_ count: Int, nodes: [NodeAddress], prefix: String, parallel: Int = 64, reusing: Bool = false) async throws -> [Peer] {
        try await withThrowingTaskGroup(of: (Int, Peer).self) { group in
            var peers: [Peer?] = Array(repeating: nil, count: count)
            var next = 0
            func add() {
                let index = next
                group.addTask { (index, try await connect(name: "\(prefix)\(index)", node: nodes[index % nodes.count], reusing: reusing)) }
                next += 1
            }
            while next < min(parallel, count) { add() }
            while let (index, peer) = try await group.next() {
                peers[index] = peer
                if next < count { add() }
            }
            return peers.map { $0! }
        }
    }

    func post(_ path: String, via node: NodeAddress, body: String? = nil) async throws -> HTTPResult {
        try await SignalingClient(host: node.host, port: node.port).request(.POST, path, token: token, body: body)
    }
}
