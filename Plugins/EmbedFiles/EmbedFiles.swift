import Foundation
import PackagePlugin

/// Embeds every non-Swift file of a target as a Swift constant, so the binary never looks for
/// a resource path at run time. The constants are values of the type the target is named for,
/// in the singular: target `LuaScripts` gets `LuaScript.join` from `join.lua`, target
/// `WebAssets` gets `WebAsset.app` from `app.js`; that type must have `init(file:source:)`.
/// Files in an `include/` folder are not embedded themselves: Lua scripts include them
/// (`--- @include "NAME"`, expanded by FileEmbedder). Every file is declared as an input, so an
/// edit regenerates the constants.
@main
struct EmbedFiles: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        let inputs = target.sourceFiles.map(\.url).filter { $0.pathExtension != "swift" && !$0.lastPathComponent.hasPrefix(".") }
        let files = inputs.filter { $0.deletingLastPathComponent().lastPathComponent != "include" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let typeName = String(target.name.dropLast(target.name.hasSuffix("s") ? 1 : 0))
        let output = context.pluginWorkDirectoryURL.appending(path: "Embedded\(target.name).swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) files as \(typeName) constants",
                executable: try context.tool(named: "FileEmbedder").url,
                arguments: [typeName, output.path] + files.map(\.path),
                inputFiles: inputs,
                outputFiles: [output]
            )
        ]
    }
}
