// The Swift face of this folder: the build plugin (Plugins/EmbedFiles) adds one constant per
// `.lua` file (`LuaScript.join`, `LuaScript.rememberRoom`, …) and `LuaScript.all`.

/// A Lua script from `Lua/`, its text embedded at build time.
public struct LuaScript: Sendable, Hashable {
    /// The file name without `.lua`, e.g. `join`.
    public let name: String
    public let source: String

    public init(file: String, source: String) {
        self.name = file.hasSuffix(".lua") ? String(file.dropLast(4)) : file
        self.source = source
    }
}
