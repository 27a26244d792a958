/// The key a command is routed by on a cluster: the first key it names, as Redis's own
/// routing reads it. Switchboard's scripts declare every key, and each call's keys share a slot.
enum CommandRouting {
    /// Commands that name no key: on a cluster they go to any primary (or, for a scan, to each).
    private static let keyless: Set<String> = [
        "PING", "ECHO", "INFO", "SCAN", "SCRIPT", "CLUSTER", "MULTI", "EXEC", "DISCARD", "ASKING", "DBSIZE", "FLUSHALL",
        "FLUSHDB", "CONFIG", "CLIENT", "DEBUG", "ROLE", "KEYS", "WAIT", "PUBLISH", "SUBSCRIBE", "PSUBSCRIBE", "FUNCTION",
        "AUTH", "HELLO", "SELECT", "TIME", "COMMAND", "LASTSAVE", "SAVE", "BGSAVE", "READONLY", "READWRITE",
    ]

    /// The routing key of `command`, or nil if it names none.
    static func key(of command: [String]) -> String? {
        guard let name = command.first?.uppercased() else { return nil }
        switch name {
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            guard command.count > 3, let count = Int(command[2]), count > 0 else { return nil }
            return command[3]
        case "PUBSUB":
            // A shard channel's subscribers are counted where its slot is served.
            guard command.count > 2, command[1].uppercased() == "SHARDNUMSUB" else { return nil }
            return command[2]
        default:
            return keyless.contains(name) || command.count < 2 ? nil : command[1]
        }
    }

    /// The slot of the first command in `commands` that names a key.
    static func slot(of commands: some Sequence<[String]>) -> Int? {
        for command in commands { if let key = key(of: command) { return HashSlot.of(key) } }
        return nil
    }
}
