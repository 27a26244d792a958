import Foundation

/// Who a peer is, as its token says and as other peers see it in `add-peer` / `remove-peer`.
public struct PeerUser: Sendable, Hashable, Codable {
    public let id: PeerID
    public let username: String
    /// `{"id":…,"username":…}`: the exact text stored in Redis and sent to other peers. Made
    /// once, since every join and relay sends it.
    public let json: String

    private enum CodingKeys: String, CodingKey { case id, username }

    public init(id: PeerID, username: String) {
        self.id = id
        self.username = username
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        json = String(decoding: try! encoder.encode(Fields(id: id, username: username)), as: UTF8.self)
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(id: try container.decode(PeerID.self, forKey: .id), username: try container.decode(String.self, forKey: .username))
    }

    private struct Fields: Encodable {
        let id: PeerID
        let username: String
    }

    /// A username is shown to other people: 1 to 64 characters, no control characters.
    public static func isValidUsername(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64 && !name.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }
}
