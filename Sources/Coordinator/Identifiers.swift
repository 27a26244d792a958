/// The characters allowed in ids and event names: letters, digits, `-`, `_`, `.`, `~`.
/// Nothing that means something in a key (`{`, `}`, `:`), a channel pattern, JSON or an SSE
/// line (space, CR, LF) can get through.
enum IdentifierRules {
    static let maxLength = 64

    static func isValid(_ text: String) -> Bool {
        guard !text.isEmpty, text.utf8.count <= maxLength else { return false }
        return text.utf8.allSatisfy(isAllowed)
    }

    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
            UInt8(ascii: "."), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    static let rule = "1 to \(maxLength) characters of A-Z a-z 0-9 - _ . ~"
}

/// A validated identifier: safe in a key, a channel name, JSON and an SSE line.
public protocol Identifier: Hashable, Sendable, CustomStringConvertible {
    var rawValue: String { get }
    /// Wraps text without checking it: only for text already checked against `IdentifierRules`.
    init(uncheckedRawValue: String)
}

extension Identifier {
    /// The identifier, or nil unless `text` follows `IdentifierRules`. (Checked as a `String`:
    /// called from other modules, a check of `some StringProtocol` runs unspecialized.)
    public init?(_ text: some StringProtocol) {
        let text = String(text)
        guard IdentifierRules.isValid(text) else { return nil }
        self.init(uncheckedRawValue: text)
    }

    public var description: String { rawValue }
}

/// The id of a peer (a token's `id`).
public struct PeerID: Identifier, Codable {
    public let rawValue: String
    public init(uncheckedRawValue: String) { rawValue = uncheckedRawValue }

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

/// The id of a room, from the URL.
public struct RoomID: Identifier {
    public let rawValue: String
    public init(uncheckedRawValue: String) { rawValue = uncheckedRawValue }
}

/// The name of a relayed event, from the URL. It becomes an SSE `event:` line, where a CR or
/// LF would forge frames.
public struct EventName: Identifier {
    public let rawValue: String
    public init(uncheckedRawValue: String) { rawValue = uncheckedRawValue }
}

/// What an id must look like, for error messages.
public let identifierRule = IdentifierRules.rule
