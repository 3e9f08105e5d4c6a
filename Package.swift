// swift-tools-version: 6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "swift-virtqueue",
    products: [
        .library(name: "Virtqueue", targets: ["Virtqueue"]),
        .library(name: "VirtqueueHeap", targets: ["VirtqueueHeap"]),
        // Test support, not API: the fuzz targets' invariant checks, shared by FuzzTesting/ (libFuzzer)
        // and VirtqueueTests (which replays the saved corpus and fail cases).
        .library(name: "_VirtqueueFuzzHarness", targets: ["_VirtqueueFuzzHarness"]),
    ],
    targets: [
        .target(name: "Virtqueue", swiftSettings: swiftSettings),
        .target(name: "VirtqueueHeap", dependencies: ["Virtqueue"], swiftSettings: swiftSettings),
        .target(name: "_VirtqueueFuzzHarness", dependencies: ["Virtqueue"], swiftSettings: swiftSettings),
        .executableTarget(
            name: "SeedWalkthrough",
            dependencies: ["Virtqueue", "VirtqueueHeap"],
            path: "Examples/SeedWalkthrough",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtqueueTests",
            dependencies: ["Virtqueue", "_VirtqueueFuzzHarness"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtqueueHeapTests",
            dependencies: ["Virtqueue", "VirtqueueHeap"],
            swiftSettings: swiftSettings
        ),
    ]
)
