import Dispatch
import Foundation

extension Process {
    /// Runs the process to its end and returns what it wrote to `pipe`. The reading and the
    /// waiting happen on a Dispatch thread: blocking a Swift concurrency thread stalls every
    /// task queued behind it, and `switchboard` runs its tasks on NIO's event loops.
    func runToEnd(reading pipe: Pipe) async throws -> String {
        try run()
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                self.waitUntilExit()
                continuation.resume(returning: String(decoding: data, as: UTF8.self))
            }
        }
    }

    /// Waits for the process to exit, on a Dispatch thread (see `runToEnd(reading:)`).
    public func exited() async {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                self.waitUntilExit()
                continuation.resume()
            }
        }
    }
}
