import CHiredis
import NIOCore

/// Encodes a command with hiredis's `redisFormatCommandArgv` (a RESP array of bulk strings).
public enum CommandEncoder {
    /// Appends `arguments` as one command to `buffer`.
    public static func encode(_ arguments: [String], into buffer: inout ByteBuffer) {
        // One contiguous copy of every argument, so all argv pointers are valid at once.
        var bytes: [UInt8] = []
        var lengths: [Int] = []
        lengths.reserveCapacity(arguments.count)
        for argument in arguments {
            bytes.append(contentsOf: argument.utf8)
            lengths.append(argument.utf8.count)
        }
        bytes.withUnsafeBufferPointer { all in
            let base = UnsafeRawPointer(all.baseAddress ?? UnsafePointer(bitPattern: 1)!)
                .assumingMemoryBound(to: CChar.self)
            var argv: [UnsafePointer<CChar>?] = []
            argv.reserveCapacity(arguments.count)
            var offset = 0
            for length in lengths {
                argv.append(base + offset)
                offset += length
            }
            var command: UnsafeMutablePointer<CChar>?
            let count = argv.withUnsafeMutableBufferPointer { argvPointer in
                lengths.withUnsafeBufferPointer { lengthPointer in
                    redisFormatCommandArgv(&command, Int32(arguments.count), argvPointer.baseAddress, lengthPointer.baseAddress)
                }
            }
            guard count >= 0, let command else { fatalError("hiredis could not allocate a command") }
            defer { redisFreeCommand(command) }
            buffer.writeBytes(UnsafeRawBufferPointer(start: command, count: Int(count)))
        }
    }
}
