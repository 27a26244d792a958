/// The characters allowed in ids and event names: letters, digits, `-`, `_`, `.`, `~`.
/// Nothing that means something in a key (`{`, `}`, `:`), a channel pattern, JSON or an SSE
/// line (space, CR, LF) can get through.
enum IdentifierRules {
    static let maxLength = 64

    static func isValid(_ text: some StringProtocol) -> Bool {
        guard !text.isEmpty, text.utf8.count <= maxLength else { return false }
        return text.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
                UInt8(ascii: "."), UInt8(ascii: "~"):
                true
            default:
                false
            }
        }
    }

    static let rule = "1 to \(maxLength) characters of A-Z a-z 0-9 - _ . ~"
}

/// The id of a peer (a token's `id`). Validated: safe in a key, a channel and JSON.
public struct PeerID: Hashable, Sendable, CustomStringConvertible, Codable {
    public let rawValue: String

    public init?(_ text: some StringProtocol) {
        guard IdentifierRules.isValid(text) else { return nil }
        rawValue = String(text)
    }

    public var description: String { rawValue }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = PeerID(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "invalid peer id"))
        }
        self = id
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// The id of a room, from the URL. Validated like `PeerID`.
public struct RoomID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init?(_ text: some StringProtocol) {
        guard IdentifierRules.isValid(text) else { return nil }
        rawValue = String(text)
    }

    public var description: String { rawValue }
}

/// The name of a relayed event, from the URL; it becomes an SSE `event:` line, so a CR or LF
/// would forge frames. Validated like `PeerID`.
public struct EventName: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init?(_ text: some StringProtocol) {
        guard IdentifierRules.isValid(text) else { return nil }
        rawValue = String(text)
    }

    public var description: String { rawValue }
}

/// What an id must look like, for error messages.
public let identifierRule = IdentifierRules.rule
