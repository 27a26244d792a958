import LuaScripts
import NIOConcurrencyHelpers
import RedisClient

/// Runs the Lua scripts by EVALSHA, routed (on a cluster) by the call's first key. Scripts are
/// loaded with SCRIPT LOAD on every primary (at start, or on first use); a `NOSCRIPT` reply
/// (a restart, SCRIPT FLUSH, or a replica promoted with an empty script cache) loads them all
/// again and retries once.
public final class ScriptRegistry: Sendable {
    private let redis: RedisClient
    private let metrics: NodeMetrics
    private let hashes = NIOLockedValueBox<[String: String]>([:])

    public init(redis: RedisClient, metrics: NodeMetrics = .none) {
        self.redis = redis
        self.metrics = metrics
    }

    /// Whether every script has been loaded (since start or the last NOSCRIPT).
    public var allLoaded: Bool { hashes.withLockedValue { $0.count == LuaScript.all.count } }

    /// Loads every script now, so the first requests don't pay for it.
    public func loadAll() async throws {
        for script in LuaScript.all { _ = try await load(script) }
    }

    /// After `NOSCRIPT`: a server lost them all (restart, SCRIPT FLUSH, promotion), so all are
    /// loaded again, everywhere (a primary that still has them just answers the same hash).
    private func reloadAll() async throws {
        hashes.withLockedValue { $0 = [:] }
        try await loadAll()
    }

    /// Runs `script` with `keys` and `arguments` and returns its reply.
    @discardableResult
    public func run(_ script: LuaScript, keys: [String], arguments: [String]) async throws -> RESPValue {
        let start = ContinuousClock.now
        defer { metrics.scriptDuration(script.name, since: start) }
        let call = Call(script, keys: keys, arguments: arguments)
        do {
            return try await redis.send(try await command(for: call))
        } catch let error as RedisServerError where error.code == "NOSCRIPT" {
            try await reloadAll()
            return try await redis.send(try await command(for: call))
        } catch let error as RedisServerError {
            metrics.redisServerErrors.increment()
            throw error
        }
    }

    /// One script call, for `run(_ calls:)`.
    public struct Call: Sendable {
        public let script: LuaScript
        public let keys: [String]
        public let arguments: [String]

        public init(_ script: LuaScript, keys: [String], arguments: [String]) {
            self.script = script
            self.keys = keys
            self.arguments = arguments
        }
    }

    /// Runs independent calls in one write (one round trip per primary) and returns their
    /// replies in order. A call answered `NOSCRIPT` runs again once the scripts are loaded.
    public func run(_ calls: [Call]) async throws -> [RESPValue] {
        var commands: [[String]] = []
        for call in calls { commands.append(try await command(for: call)) }
        let start = ContinuousClock.now
        var replies = try await redis.pipeline(commands, order: .independent)
        for call in calls { metrics.scriptDuration(call.script.name, since: start) }
        for index in replies.indices where replies[index].errorMessage?.hasPrefix("NOSCRIPT") == true {
            replies[index] = try await run(calls[index].script, keys: calls[index].keys, arguments: calls[index].arguments)
        }
        for reply in replies {
            if case .error(let message) = reply {
                metrics.redisServerErrors.increment()
                throw RedisServerError(message)
            }
        }
        return replies
    }

    /// Runs `call` and the command `read` as one transaction (MULTI … EXEC, one round trip), so
    /// that nothing else runs between them: `read` sees the keys as they were just before the
    /// script or just after it. Returns both replies. `NOSCRIPT` as for the others: the
    /// transaction runs again (the script did not run, and the read changes nothing).
    public func run(_ call: Call, reading read: [String], beforeScript: Bool) async throws -> (script: RESPValue, read: RESPValue) {
        let start = ContinuousClock.now
        defer { metrics.scriptDuration(call.script.name, since: start) }
        if let replies = try await transaction(call, read, beforeScript: beforeScript) { return replies }
        try await reloadAll()
        guard let replies = try await transaction(call, read, beforeScript: beforeScript) else {
            metrics.redisServerErrors.increment()
            throw RedisServerError("NOSCRIPT the script was not there right after it was loaded")
        }
        return replies
    }

    /// The transaction's replies; nil if the script was not loaded.
    private func transaction(_ call: Call, _ read: [String], beforeScript: Bool) async throws -> (script: RESPValue, read: RESPValue)? {
        let script = try await command(for: call)
        let results: [RESPValue]
        do {
            results = try await redis.transaction(beforeScript ? [read, script] : [script, read])
        } catch let error as RedisServerError {
            metrics.redisServerErrors.increment()
            throw error
        }
        let (scriptReply, readReply) = beforeScript ? (results[1], results[0]) : (results[0], results[1])
        if scriptReply.errorMessage?.hasPrefix("NOSCRIPT") == true { return nil }
        for reply in [scriptReply, readReply] {
            if let message = reply.errorMessage {
                metrics.redisServerErrors.increment()
                throw RedisServerError(message)
            }
        }
        return (scriptReply, readReply)
    }

    /// `EVALSHA sha numkeys keys… arguments…`, loading the script first if it is not loaded.
    private func command(for call: Call) async throws -> [String] {
        let cached = hashes.withLockedValue { $0[call.script.name] }
        let sha = if let cached { cached } else { try await load(call.script) }
        return ["EVALSHA", sha, String(call.keys.count)] + call.keys + call.arguments
    }

    /// Loads `script` on every primary and returns its hash. A primary that cannot be reached
    /// now answers `NOSCRIPT` later and is loaded then; if none can, this throws.
    private func load(_ script: LuaScript) async throws -> String {
        var sha: String?
        var failure: Error?
        for result in try await redis.sendToEachPrimary(["SCRIPT", "LOAD", script.source]) {
            switch result {
            case .success(let reply):
                if let hash = reply.string, reply.errorMessage == nil { sha = hash } else { failure = RedisServerError("SCRIPT LOAD returned \(reply)") }
            case .failure(let error):
                failure = error
            }
        }
        guard let sha else { throw failure ?? RedisServerError("SCRIPT LOAD gave no hash") }
        hashes.withLockedValue { $0[script.name] = sha }
        return sha
    }
}
