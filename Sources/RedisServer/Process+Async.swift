import Dispatch
import Foundation

extension Process {
    /// Runs the process to its end and returns what it wrote to `pipe`.
    func runToEnd(reading pipe: Pipe) async throws -> String {
        try run()
        nonisolated(unsafe) let pipe = pipe
        let data = await Self.offConcurrencyThreads { pipe.fileHandleForReading.readDataToEndOfFile() }
        await exited()
        return String(decoding: data, as: UTF8.self)
    }

    /// Waits for the process to exit.
    public func exited() async {
        await Self.offConcurrencyThreads { self.waitUntilExit() }
    }

    /// Runs blocking `work` on a Dispatch thread: blocking a Swift concurrency thread stalls
    /// every task queued behind it, and `switchboard` runs its tasks on NIO's event loops.
    private static func offConcurrencyThreads<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: work()) }
        }
    }
}
