import CHiredis
import NIOCore

/// hiredis's incremental reply parser: feed it bytes as they arrive, take replies out as they
/// complete. Not thread-safe; one per connection, used on its event loop.
public final class HiredisReader {
    private let reader: UnsafeMutablePointer<redisReader>
    private let allocator = ByteBufferAllocator()

    public init() {
        reader = redisReaderCreate()
        // Keep hiredis's read buffer instead of freeing it whenever it empties (the default
        // trims above 16 KiB); a busy connection would otherwise malloc per read.
        reader.pointee.maxbuf = 0
    }

    deinit { redisReaderFree(reader) }

    public func feed(_ buffer: ByteBuffer) throws {
        let status = buffer.withUnsafeReadableBytes { bytes in
            redisReaderFeed(reader, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        guard status == REDIS_OK else { throw RedisConnectionError.protocolError(errorString) }
    }

    /// The next complete reply, or nil if more bytes are needed.
    public func next() throws -> RESPValue? {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
            throw RedisConnectionError.protocolError(errorString)
        }
        guard let raw else { return nil }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return convert(reply)
    }

    private var errorString: String {
        withUnsafeBytes(of: &reader.pointee.errstr) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    private func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            var buffer = allocator.buffer(capacity: r.len)
            buffer.writeBytes(UnsafeRawBufferPointer(start: r.str, count: r.len))
            return .bulkString(buffer)
        case REDIS_REPLY_STATUS:
            return .simpleString(text(r))
        case REDIS_REPLY_ERROR:
            return .error(text(r))
        case REDIS_REPLY_INTEGER:
            return .integer(Int(r.integer))
        case REDIS_REPLY_ARRAY:
            var elements: [RESPValue] = []
            elements.reserveCapacity(r.elements)
            for i in 0..<r.elements { elements.append(convert(r.element[i]!)) }
            return .array(elements)
        default:
            return .null
        }
    }

    private func text(_ r: redisReply) -> String {
        String(decoding: UnsafeRawBufferPointer(start: r.str, count: r.len), as: UTF8.self)
    }
}
