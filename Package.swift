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
        .library(name: "VirtqueueSharedMemory", targets: ["VirtqueueSharedMemory"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1")
    ],
    targets: [
        .target(name: "Virtqueue", swiftSettings: swiftSettings),
        .target(name: "VirtqueueHeap", dependencies: ["Virtqueue"], swiftSettings: swiftSettings),
        .target(name: "CVirtqueueSystem"),
        .target(
            name: "VirtqueueSharedMemory",
            dependencies: [
                "Virtqueue",
                "CVirtqueueSystem",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "SeedWalkthrough",
            dependencies: ["Virtqueue", "VirtqueueHeap"],
            path: "Examples/SeedWalkthrough",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "VirtqueueTestDevices",
            dependencies: ["Virtqueue"],
            path: "Tests/VirtqueueTestDevices",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "VirtqueueDeviceHost",
            dependencies: ["VirtqueueSharedMemory", "VirtqueueTestDevices"],
            path: "Tests/VirtqueueDeviceHost",
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "VirtqueueCPeer", path: "Tests/VirtqueueCPeer"),
        .testTarget(name: "VirtqueueTests", dependencies: ["Virtqueue"], swiftSettings: swiftSettings),
        .testTarget(
            name: "VirtqueueHeapTests",
            dependencies: ["Virtqueue", "VirtqueueHeap"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtqueueSharedMemoryTests",
            dependencies: [
                "Virtqueue",
                "VirtqueueHeap",
                "VirtqueueSharedMemory",
                "VirtqueueTestDevices",
                "CVirtqueueSystem",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
