/// One Server-Sent Event as a browser's EventSource would see it.
public struct ServerSentEvent: Sendable, Equatable {
    public var id: String?
    public var event: String
    public var data: String
    public var retry: Int?
}

/// Splits an event stream into events, following the EventSource parsing rules (LF, CR or
/// CRLF line ends; `:` comments; several `data:` lines joined by LF).
public struct SSEParser: Sendable {
    private var pending: [UInt8] = []
    private var id: String?
    private var event = ""
    private var data: [String] = []
    private var retry: Int?
    private var sawCR = false

    /// The reconnection time the stream last set with a `retry:` line, in milliseconds. It
    /// applies at once, whether or not an event follows (a stream may end with one alone).
    public private(set) var reconnectionTime: Int?

    public init() {}

    /// Feeds bytes and returns the events they complete.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [ServerSentEvent] {
        var events: [ServerSentEvent] = []
        for byte in bytes {
            if sawCR && byte == UInt8(ascii: "\n") {
                sawCR = false
                continue
            }
            sawCR = byte == UInt8(ascii: "\r")
            if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
                if let event = line(String(decoding: pending, as: UTF8.self)) { events.append(event) }
                pending.removeAll(keepingCapacity: true)
            } else {
                pending.append(byte)
            }
        }
        return events
    }

    private mutating func line(_ line: String) -> ServerSentEvent? {
        if line.isEmpty {
            defer { event = ""; data = []; retry = nil }
            guard !data.isEmpty else { return nil }
            return ServerSentEvent(id: id, event: event.isEmpty ? "message" : event, data: data.joined(separator: "\n"), retry: retry)
        }
        if line.hasPrefix(":") { return nil }
        let field: Substring
        var value: Substring
        if let colon = line.firstIndex(of: ":") {
            field = line[..<colon]
            value = line[line.index(after: colon)...]
            if value.hasPrefix(" ") { value = value.dropFirst() }
        } else {
            field = line[...]
            value = ""
        }
        switch field {
        case "id": id = String(value)
        case "event": event = String(value)
        case "data": data.append(String(value))
        case "retry":
            // Only ASCII digits count (WHATWG HTML, "process the field").
            if !value.isEmpty, value.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let milliseconds = Int(value) {
                retry = milliseconds
                reconnectionTime = milliseconds
            }
        default: break
        }
        return nil
    }
}
