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
        .library(name: "VirtqueueSandbox", targets: ["VirtqueueSandbox"]),
        .library(name: "VirtqueueAsync", targets: ["VirtqueueAsync"]),
        .library(name: "VirtqueueConformance", targets: ["VirtqueueConformance"]),
        // The conformance suite's helper process (peerProcessDeath): a backend's test target
        // depends on it so that SwiftPM builds it beside the test binary.
        .executable(name: "VirtqueueConformanceHelper", targets: ["VirtqueueConformanceHelper"]),
        .library(name: "VirtqueueVhostUser", targets: ["VirtqueueVhostUser"]),
        .executable(name: "VirtqueueScaffold", targets: ["VirtqueueScaffold"]),
        .plugin(name: "NewComponentPair", targets: ["NewComponentPair"]),
        // Test support, not API: the fuzz targets' invariant checks, shared by FuzzTesting/ (libFuzzer)
        // and VirtqueueTests (which replays the saved corpus and fail cases).
        .library(name: "_VirtqueueFuzzHarness", targets: ["_VirtqueueFuzzHarness"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // The CPU's spin-wait hint for the core's polling loop (header-only).
        .target(name: "CVirtqueueRelax"),
        .target(name: "Virtqueue", dependencies: ["CVirtqueueRelax"], swiftSettings: swiftSettings),
        .target(name: "VirtqueueHeap", dependencies: ["Virtqueue", "CVirtqueueSystem"], swiftSettings: swiftSettings),
        .target(
            name: "VirtqueueConformance",
            dependencies: ["Virtqueue", "CVirtqueueSystem"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "VirtqueueConformanceHelper",
            dependencies: ["VirtqueueConformance"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "_VirtqueueFuzzHarness",
            dependencies: ["Virtqueue", "VirtqueueVhostUser"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "FileBackend",
            dependencies: ["Virtqueue"],
            path: "Examples/FileBackend",
            swiftSettings: swiftSettings
        ),
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
        .target(
            name: "VirtqueueAsync",
            dependencies: [
                "Virtqueue", "CVirtqueueSystem", "VirtqueueSharedMemory",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "VirtqueueVhostUser",
            dependencies: [
                "Virtqueue", "CVirtqueueSystem", "VirtqueueSharedMemory", "VirtqueueSandbox",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        .target(name: "CVirtqueueSandbox"),
        .target(
            name: "VirtqueueSandbox",
            dependencies: [
                "Virtqueue", "VirtqueueSharedMemory", "CSeccomp", "CVirtqueueSandbox",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        // No dependencies, so that a package depending on this one does not resolve
        // swift-argument-parser (used only by the examples) for the plugin's sake.
        .executableTarget(name: "VirtqueueScaffold", swiftSettings: swiftSettings),
        .plugin(
            name: "NewComponentPair",
            capability: .command(
                intent: .custom(
                    verb: "new-component-pair",
                    description: "Write a virtqueue driver and device pair, a device host and a test that runs "
                        + "them at every isolation level."
                ),
                permissions: [
                    .writeToPackageDirectory(
                        reason: "writes the new pair's sources and test, and registers them in Package.swift"
                    )
                ]
            ),
            dependencies: ["VirtqueueScaffold"]
        ),
        .target(
            name: "VirtioBlock",
            dependencies: ["Virtqueue"],
            path: "Examples/VirtioBlock",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "VirtioNet",
            dependencies: [
                "Virtqueue", "VirtqueueVhostUser", .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Examples/VirtioNet",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "VhostUserNet",
            dependencies: [
                "VirtioNet", "Virtqueue", "VirtqueueVhostUser",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Examples/VhostUserNet",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "VhostUserBlock",
            dependencies: [
                "Virtqueue", "VirtqueueSandbox", "VirtqueueVhostUser", "VirtioBlock",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Examples/VhostUserBlock",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "BlockDemo",
            dependencies: [
                "Virtqueue", "VirtqueueHeap", "VirtqueueSharedMemory", "VirtqueueSandbox", "VirtioBlock",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Examples/BlockDemo",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "SeedWalkthrough",
            dependencies: ["Virtqueue", "VirtqueueHeap"],
            path: "Examples/SeedWalkthrough",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "ComponentHost",
            dependencies: ["Virtqueue", "VirtqueueHeap", "VirtqueueSharedMemory"],
            path: "Examples/ComponentHost",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "VirtqueueTestDevices",
            dependencies: ["Virtqueue", "VirtqueueConformance", "CVirtqueueSandbox"],
            path: "Tests/VirtqueueTestDevices",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "VirtqueueDeviceHost",
            dependencies: [
                "VirtqueueSharedMemory", "VirtqueueSandbox", "VirtqueueTestDevices", "VirtqueueConformance",
            ],
            path: "Tests/VirtqueueDeviceHost",
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "VirtqueueCPeer", path: "Tests/VirtqueueCPeer"),
        // The test devices served with the async API, for VirtqueueAsyncTests' child processes.
        .executableTarget(
            name: "VirtqueueAsyncDeviceHost",
            dependencies: ["VirtqueueAsync", "VirtqueueSharedMemory", "VirtqueueSandbox", "VirtqueueTestDevices"],
            path: "Tests/VirtqueueAsyncDeviceHost",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtqueueTests",
            dependencies: ["Virtqueue", "VirtqueueHeap", "VirtqueueConformance", "_VirtqueueFuzzHarness"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtqueueConformanceTests",
            dependencies: [
                "Virtqueue", "VirtqueueHeap", "VirtqueueSharedMemory", "VirtqueueSandbox", "VirtqueueConformance",
                "VirtqueueConformanceHelper", "FileBackend", "VirtqueueTestDevices", "CVirtqueueSystem",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtioBlockTests",
            dependencies: ["VirtioBlock", "Virtqueue", "VirtqueueHeap"],
            swiftSettings: swiftSettings
        ),
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
        .testTarget(
            name: "VirtqueueVhostUserTests",
            dependencies: [
                "Virtqueue", "VirtqueueVhostUser", "VirtqueueSandbox", "VirtioBlock", "VirtioNet", "CVirtqueueSystem",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtqueueAsyncTests",
            dependencies: [
                "Virtqueue", "VirtqueueAsync", "VirtqueueHeap", "VirtqueueSharedMemory", "VirtqueueSandbox",
                "VirtqueueTestDevices", "VirtqueueAsyncDeviceHost", "VirtqueueDeviceHost",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtqueueLaunchTests",
            dependencies: [
                "Virtqueue", "VirtqueueHeap", "VirtqueueSharedMemory", "VirtqueueSandbox", "VirtqueueTestDevices",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VirtqueueSandboxTests",
            dependencies: [
                "Virtqueue",
                "VirtqueueSandbox",
                "VirtqueueSharedMemory",
                "VirtqueueTestDevices",
                "CVirtqueueSandbox",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
