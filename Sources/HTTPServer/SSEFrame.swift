import Coordinator
import NIOCore

/// Encodes Server-Sent Events. Ids, names and data come from event cursors, validated
/// identifiers and compact JSON, which hold no CR or LF, so one event is one frame.
public struct SSEEncoder: Sendable {
    public init() {}

    /// Appends `id: ID\nevent: NAME\ndata: DATA\n\n` to `buffer` (no `id:` line if the id is empty).
    public func encode(_ event: StreamEvent, into buffer: inout ByteBuffer) {
        if !event.id.isEmpty {
            buffer.writeStaticString("id: ")
            buffer.writeString(event.id)
            buffer.writeStaticString("\n")
        }
        buffer.writeStaticString("event: ")
        buffer.writeString(event.name)
        buffer.writeStaticString("\ndata: ")
        buffer.writeImmutableBuffer(event.data)
        buffer.writeStaticString("\n\n")
    }
}
