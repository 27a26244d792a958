import LuaScripts
import RedisClient
import Synchronization

/// Runs the Lua scripts by EVALSHA. Scripts are loaded with SCRIPT LOAD (at start, or on
/// first use); a `NOSCRIPT` reply (Redis restarted or SCRIPT FLUSH) loads the script again
/// and retries once.
public final class ScriptRegistry: Sendable {
    private let redis: RedisClient
    private let hashes = Mutex<[String: String]>([:])

    public init(redis: RedisClient) { self.redis = redis }

    /// Loads every script now, so the first requests don't pay for it.
    public func loadAll() async throws {
        for script in LuaScript.all { _ = try await load(script) }
    }

    /// Runs `script` with `keys` and `arguments` and returns its reply.
    @discardableResult
    public func run(_ script: LuaScript, keys: [String], arguments: [String]) async throws -> RESPValue {
        let cached = hashes.withLock { $0[script.name] }
        let sha = if let cached { cached } else { try await load(script) }
        do {
            return try await redis.send(["EVALSHA", sha, String(keys.count)] + keys + arguments)
        } catch let error as RedisServerError where error.code == "NOSCRIPT" {
            let sha = try await load(script)
            return try await redis.send(["EVALSHA", sha, String(keys.count)] + keys + arguments)
        }
    }

    private func load(_ script: LuaScript) async throws -> String {
        let reply = try await redis.send(["SCRIPT", "LOAD", script.source])
        guard let sha = reply.string else { throw RedisServerError("SCRIPT LOAD returned \(reply)") }
        hashes.withLock { $0[script.name] = sha }
        return sha
    }
}
