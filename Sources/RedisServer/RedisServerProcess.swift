import Foundation
import Logging

/// A private `redis-server` child process in its own temporary directory, listening on a
/// unix socket (and, if asked, a loopback TCP port), with persistence off. Used as the
/// embedded default of `switchboard serve` and by the tests.
public final class RedisServerProcess: @unchecked Sendable {
    /// The server's own directory: socket, log, nothing else. Removed by `stop()`.
    public let directory: URL
    public let socketPath: String
    public let tcpPort: Int?
    private let extraArguments: [String]
    private let executable: String
    private let lock = NSLock()
    private var process: Process?

    public struct NotFound: Error, CustomStringConvertible {
        public var description: String {
            "redis-server not found on PATH: install it (apt-get install -y redis-server) or give a Redis URL (--redis)"
        }
    }

    public struct FailedToStart: Error, CustomStringConvertible {
        public let log: String
        public var description: String { "redis-server did not start:\n\(log)" }
    }

    /// Starts a redis-server and returns once it accepts connections.
    /// - Parameters:
    ///   - tcpPort: also listen on this loopback port (see `freePort()`); unix socket only if nil.
    ///   - extraArguments: more `redis-server` options, e.g. `["--requirepass", "secret"]`.
    public static func start(tcpPort: Int? = nil, extraArguments: [String] = []) async throws -> RedisServerProcess {
        guard let executable = findExecutable("redis-server") else { throw NotFound() }
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("switchboard-redis-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let server = RedisServerProcess(
            executable: executable, directory: directory, tcpPort: tcpPort, extraArguments: extraArguments)
        do {
            try await server.launch()
        } catch {
            await server.stop()  // its directory too
            throw error
        }
        return server
    }

    /// Runs `body` with a fresh server and stops the server afterwards, whatever happens.
    public static func with<T>(
        tcpPort: Int? = nil, extraArguments: [String] = [], _ body: (RedisServerProcess) async throws -> T
    ) async throws -> T {
        let server = try await start(tcpPort: tcpPort, extraArguments: extraArguments)
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    private init(executable: String, directory: URL, tcpPort: Int?, extraArguments: [String]) {
        self.extraArguments = extraArguments
        self.executable = executable
        self.directory = directory
        // Unix socket paths are limited to ~107 bytes; the temp dir keeps this short.
        self.socketPath = directory.appendingPathComponent("redis.sock").path
        self.tcpPort = tcpPort
    }

    /// `unix:///…/redis.sock`, for `RedisEndpoint(url:)` and `--redis`.
    public var url: String { "unix://\(socketPath)" }

    public var isRunning: Bool { lock.withLock { process?.isRunning ?? false } }

    private var logPath: String { directory.appendingPathComponent("redis.log").path }

    private func launch() async throws {
        try? FileManager.default.removeItem(atPath: logPath)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "--port", String(tcpPort ?? 0), "--bind", "127.0.0.1",
            "--unixsocket", socketPath, "--unixsocketperm", "700",
            "--dir", directory.path, "--logfile", logPath,
            "--save", "", "--appendonly", "no", "--daemonize", "no",
        ] + extraArguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        lock.withLock { self.process = process }
        // Ready when the log says so; give up after 10 s.
        for _ in 0..<200 {
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            if log.lowercased().contains("ready to accept connections") { return }
            if !process.isRunning {
                lock.withLock { self.process = nil }
                throw FailedToStart(log: log)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        await kill()
        throw FailedToStart(log: (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "(no log)")
    }

    /// Stops the server at once (SIGKILL: nothing is persisted, so there is nothing to save;
    /// a SIGTERM may sit blocked in a signal mask the child inherited) and keeps its directory.
    public func kill() async {
        guard let process = lock.withLock({ self.process }) else { return }
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        for _ in 0..<200 where process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
        lock.withLock { self.process = nil }
    }

    /// Stops the server and starts it again on the same socket and port, empty.
    public func restart() async throws {
        await kill()
        try await launch()
    }

    /// Stops the server and removes its directory.
    public func stop() async {
        await kill()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs one command with `redis-cli` on the server's socket and returns what it printed.
    @discardableResult
    public func command(_ arguments: String...) async throws -> String { try await command(arguments) }

    @discardableResult
    public func command(_ arguments: [String]) async throws -> String {
        guard let cli = Self.findExecutable("redis-cli") else { throw NotFound() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: cli)
        process.arguments = ["-s", socketPath] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        return try await process.runToEnd(reading: output)
    }

    /// Whether nothing listens on this loopback TCP port.
    static func isFree(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// A free loopback TCP port, found by binding port 0.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                bind(fd, raw, length) == 0 && getsockname(fd, raw, &length) == 0
            }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func findExecutable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let candidates = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        return candidates.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
