import Foundation

/// Who a peer is, as its token says and as other peers see it in `add-peer` / `remove-peer`.
public struct PeerUser: Sendable, Hashable, Codable {
    public let id: PeerID
    public let username: String

    public init(id: PeerID, username: String) {
        self.id = id
        self.username = username
    }

    /// `{"id":…,"username":…}`: the exact text stored in Redis and sent to other peers.
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try! encoder.encode(self), as: UTF8.self)
    }

    /// A username is shown to other people: 1 to 64 characters, no control characters.
    public static func isValidUsername(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64 && !name.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }
}
