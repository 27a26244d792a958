import Foundation
import PackagePlugin

/// Embeds every `.lua` file of the target as a Swift string constant, so the binary never
/// looks for a resource path at run time. Declares the scripts as inputs: an edit regenerates.
@main
struct EmbedLua: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        let scripts = target.sourceFiles.map(\.url).filter { $0.pathExtension == "lua" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedLuaScripts.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(scripts.count) Lua scripts",
                executable: try context.tool(named: "LuaEmbedder").url,
                arguments: [output.path] + scripts.map(\.path),
                inputFiles: scripts,
                outputFiles: [output]
            )
        ]
    }
}
