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
        guard let connected = await stream.next(), connected.event == "connected", let id = peerID(connected: Data(connected.data.utf8))
        else { throw Failed(description: "no 'connected' event from \(node)") }
        return Peer(token: token, id: id, stream: stream, node: node)
    }

    /// The peer id in a `connected` event's data (`{"user":{"id":…}}`).
    static func peerID(connected data: Data) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let user = object["user"] as? [String: Any]
        else { return nil }
        return user["id"] as? String
    }

    /// Connects `count` peers spread round-robin over the nodes, `parallel` at a time.
    static func connectMany(_ count: Int, nodes: [NodeAddress], prefix: String, parallel: Int = 64, reusing: Bool = false) async throws -> [Peer] {
        try await openMany(count, parallel: parallel) { index in
            try await connect(name: "\(prefix)\(index)", node: nodes[index % nodes.count], reusing: reusing)
        }
    }

    func post(_ path: String, via node: NodeAddress, body: String? = nil) async throws -> HTTPResult {
        try await SignalingClient(host: node.host, port: node.port).request(.POST, path, token: token, body: body)
    }
}

/// `open(0)` … `open(count - 1)`, `parallel` at a time, in their order.
func openMany<T: Sendable>(_ count: Int, parallel: Int = 64, _ open: @escaping @Sendable (Int) async throws -> T) async throws -> [T] {
    try await withThrowingTaskGroup(of: (Int, T).self) { group in
        var opened: [T?] = Array(repeating: nil, count: count)
        var next = 0
        func add() {
            let index = next
            group.addTask { (index, try await open(index)) }
            next += 1
        }
        while next < min(parallel, count) { add() }
        while let (index, value) = try await group.next() {
            opened[index] = value
            if next < count { add() }
        }
        return opened.map { $0! }
    }
}
