import NIOCore

/// Encodes Server-Sent Events. Every event carries an `id:`. Names and data come from
/// validated identifiers and compact JSON, which hold no CR or LF, so one event is one frame.
public struct SSEEncoder: Sendable {
    /// The id of the last event written; ids count up from 1 per stream.
    public private(set) var lastID: UInt64 = 0

    public init() {}

    /// Appends `id: N\nevent: NAME\ndata: DATA\n\n` to `buffer`.
    public mutating func encode(event name: String, data: ByteBuffer, into buffer: inout ByteBuffer) {
        lastID += 1
        buffer.writeStaticString("id: ")
        buffer.writeString(String(lastID))
        buffer.writeStaticString("\nevent: ")
        buffer.writeString(name)
        buffer.writeStaticString("\ndata: ")
        buffer.writeImmutableBuffer(data)
        buffer.writeStaticString("\n\n")
    }
}
