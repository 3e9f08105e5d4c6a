// swift-tools-version: 6.1
// The swift-virtqueue benchmarks: their own package, so the library never depends on the
// benchmark harness. Run them with `scripts/bench.sh` (the side-by-side table with ratios) or
// `swift package --package-path Benchmarks benchmark` (package-benchmark's statistics).
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "swift-virtqueue-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-virtqueue", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.1"),
    ],
    targets: [
        // The baselines: a plain SPSC ring in shared memory, a pipe and a socketpair.
        .target(name: "CBaselines", path: "Sources/CBaselines"),
        // The Swift scenarios, shared by the package-benchmark targets and the reporter.
        .target(
            name: "BenchmarkScenarios",
            dependencies: [
                "CBaselines",
                .product(name: "Virtqueue", package: "swift-virtqueue"),
                .product(name: "VirtqueueHeap", package: "swift-virtqueue"),
            ],
            path: "Sources/BenchmarkScenarios",
            swiftSettings: swiftSettings
        ),
        // The side-by-side reporter: every scenario and baseline in one invocation, a table and JSON.
        .executableTarget(
            name: "virtqueue-bench",
            dependencies: [
                "BenchmarkScenarios",
                "CBaselines",
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
                .product(name: "VirtqueueSharedMemory", package: "swift-virtqueue"),
                .product(name: "VirtqueueSandbox", package: "swift-virtqueue"),
                .product(name: "VirtqueueAsync", package: "swift-virtqueue"),
            ],
            path: "Sources/VirtqueueBench",
            swiftSettings: swiftSettings
        ),
        // package-benchmark suites.
        .executableTarget(
            name: "InProcess",
            dependencies: [
                "BenchmarkScenarios",
                "CBaselines",
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/InProcess",
            swiftSettings: swiftSettings,
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
