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
        .library(name: "VirtqueueConformance", targets: ["VirtqueueConformance"]),
    ],
    targets: [
        .target(name: "Virtqueue", swiftSettings: swiftSettings),
        .target(name: "VirtqueueHeap", dependencies: ["Virtqueue"], swiftSettings: swiftSettings),
        .target(name: "VirtqueueConformance", dependencies: ["Virtqueue"], swiftSettings: swiftSettings),
        .target(
            name: "FileBackend",
            dependencies: ["Virtqueue"],
            path: "Examples/FileBackend",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "SeedWalkthrough",
            dependencies: ["Virtqueue", "VirtqueueHeap"],
            path: "Examples/SeedWalkthrough",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtqueueTests",
            dependencies: ["Virtqueue", "VirtqueueConformance"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtqueueHeapTests",
            dependencies: ["Virtqueue", "VirtqueueHeap"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtqueueConformanceTests",
            dependencies: ["Virtqueue", "VirtqueueHeap", "VirtqueueConformance", "FileBackend"],
            swiftSettings: swiftSettings
        ),
    ]
)
