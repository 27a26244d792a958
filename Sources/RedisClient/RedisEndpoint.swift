/// Where a Redis server is and how to log in: parsed from `redis://[[user]:password@]host[:port][/db]`
/// or `unix:///path/to/redis.sock[?db=N&password=P]`.
public struct RedisEndpoint: Sendable, Hashable, CustomStringConvertible {
    public enum Address: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public var address: Address
    public var username: String?
    public var password: String?
    public var database: Int

    public init(address: Address, username: String? = nil, password: String? = nil, database: Int = 0) {
        self.address = address
        self.username = username
        self.password = password
        self.database = database
    }

    public struct InvalidURL: Error, CustomStringConvertible {
        public let url: String
        public let reason: String
        public var description: String {
            "invalid Redis URL '\(url)': \(reason) (expected redis://[:password@]host:port[/db] or unix:///path)"
        }
    }

    public init(url: String) throws {
        func fail(_ reason: String) -> InvalidURL { InvalidURL(url: url, reason: reason) }
        if url.hasPrefix("unix://") {
            var rest = Substring(url.dropFirst("unix://".count))
            var query: Substring = ""
            if let q = rest.firstIndex(of: "?") {
                query = rest[rest.index(after: q)...]
                rest = rest[..<q]
            }
            guard rest.hasPrefix("/") else { throw fail("a unix socket path must be absolute") }
            self.init(address: .unix(path: String(rest)))
            for pair in query.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { throw fail("bad query item '\(pair)'") }
                switch parts[0] {
                case "db":
                    guard let db = Int(parts[1]), db >= 0 else { throw fail("db must be a number") }
                    database = db
                case "password": password = parts[1].removingPercentEncoding
                case "user", "username": username = parts[1].removingPercentEncoding
                default: throw fail("unknown query item '\(parts[0])'")
                }
            }
            return
        }
        guard url.hasPrefix("redis://") else { throw fail("unknown scheme") }
        var rest = Substring(url.dropFirst("redis://".count))
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let user = credentials[..<colon]
                username = user.isEmpty ? nil : String(user).removingPercentEncoding
                password = String(credentials[credentials.index(after: colon)...]).removingPercentEncoding
            } else {
                password = String(credentials).removingPercentEncoding
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !db.isEmpty {
                guard let n = Int(db), n >= 0 else { throw fail("database must be a number") }
                database = n
            }
        }
        var host = String(rest)
        var port = 6379
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {  // [::1]:6379
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()) else { throw fail("port must be a number") }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let p = Int(rest[rest.index(after: colon)...]) else { throw fail("port must be a number") }
            port = p
        }
        guard !host.isEmpty else { throw fail("missing host") }
        guard (1...65535).contains(port) else { throw fail("port out of range") }
        self.init(address: .tcp(host: host, port: port), username: username, password: password, database: database)
    }

    /// Seed nodes of a Redis Cluster, `HOST:PORT[,HOST:PORT…]`, each also writable as
    /// `redis://[user:password@]host:port`. Every node is logged into with the same
    /// credentials; a database is refused (a cluster has only db 0), and so is a unix socket
    /// (the cluster names its nodes by TCP address).
    public static func clusterSeeds(_ list: String) throws -> [RedisEndpoint] {
        func fail(_ seed: String, _ reason: String) -> InvalidURL { InvalidURL(url: seed, reason: reason) }
        let seeds = try list.split(separator: ",").map { part -> RedisEndpoint in
            let seed = part.filter { $0 != " " }
            if seed.hasPrefix("unix://") { throw fail(seed, "a cluster seed must be a TCP address") }
            let url = seed.hasPrefix("redis://") ? seed : "redis://\(seed)"
            if url.dropFirst("redis://".count).split(separator: "@").last?.contains("/") == true {
                throw fail(seed, "a cluster has only database 0: leave out the /db")
            }
            return try RedisEndpoint(url: url)
        }
        guard let first = seeds.first else { throw fail(list, "no seed node given") }
        guard seeds.allSatisfy({ $0.username == first.username && $0.password == first.password }) else {
            throw fail(list, "every seed must have the same credentials (they are used on every node)")
        }
        return seeds
    }

    /// The URL without the password, for logs.
    public var description: String {
        let auth = password == nil ? "" : "\(username ?? ""):***@"
        switch address {
        case .tcp(let host, let port):
            let h = host.contains(":") ? "[\(host)]" : host
            return "redis://\(auth)\(h):\(port)/\(database)"
        case .unix(let path):
            return "unix://\(path)" + (database == 0 ? "" : "?db=\(database)") + (password == nil ? "" : " (with password)")
        }
    }
}

extension String {
    /// Decodes `%XX` escapes (for passwords in URLs); nil if an escape is malformed.
    fileprivate var removingPercentEncoding: String? {
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                    let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                else { return nil }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
