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
        .library(name: "VirtqueueSandbox", targets: ["VirtqueueSandbox"]),
        .executable(name: "virtqueue-scaffold", targets: ["VirtqueueScaffold"]),
        .plugin(name: "NewComponentPair", targets: ["NewComponentPair"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .target(name: "Virtqueue", swiftSettings: swiftSettings),
        .target(name: "VirtqueueHeap", dependencies: ["Virtqueue"], swiftSettings: swiftSettings),
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        .target(name: "CVirtqueueSandbox"),
        .target(
            name: "VirtqueueSandbox",
            dependencies: ["Virtqueue", "CSeccomp", "CVirtqueueSandbox"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "VirtqueueScaffold",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings
        ),
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
        .target(name: "VirtioBlock", dependencies: ["Virtqueue"], path: "Examples/VirtioBlock", swiftSettings: swiftSettings),
        .executableTarget(
            name: "SeedWalkthrough",
            dependencies: ["Virtqueue", "VirtqueueHeap"],
            path: "Examples/SeedWalkthrough",
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "VirtqueueTests", dependencies: ["Virtqueue"], swiftSettings: swiftSettings),
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
    ]
)
