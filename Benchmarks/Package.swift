// swift-tools-version:6.1
// The microbenchmarks, a package of their own so that `swift build` / `swift test` of
// Switchboard never build ordo-one/benchmark. Run: `cd Benchmarks && swift package benchmark`.
import Foundation
import PackageDescription

// A path dependency is named after its folder: whatever the checkout is called.
let switchboard = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "switchboard-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "SwitchboardBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RedisClient", package: switchboard),
                .product(name: "Coordinator", package: switchboard),
                .product(name: "LuaScripts", package: switchboard),
                .product(name: "HTTPServer", package: switchboard),
                .product(name: "RedisServer", package: switchboard),
            ],
            path: "SwitchboardBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
