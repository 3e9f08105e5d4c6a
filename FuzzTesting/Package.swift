// swift-tools-version: 6.1
import PackageDescription

// The libFuzzer targets. Build them with the sanitizer flags on the command line, so that the
// ring core they link is instrumented too (see scripts/fuzz.sh):
//
//   swift build -c release --product FuzzDevice \
//       -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
//
// MakeSeeds regenerates Corpus/ and is built without them: `swift run MakeSeeds`.

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let harness: Target.Dependency = .product(name: "_VirtqueueFuzzHarness", package: "swift-virtqueue")
let fuzzTarget: [Target.Dependency] = [harness, "CLibFuzzer"]

let package = Package(
    name: "FuzzTesting",
    dependencies: [
        .package(name: "swift-virtqueue", path: "..")
    ],
    targets: [
        .target(name: "CLibFuzzer"),
        .executableTarget(name: "FuzzDevice", dependencies: fuzzTarget, swiftSettings: swiftSettings),
        .executableTarget(name: "FuzzDevicePacked", dependencies: fuzzTarget, swiftSettings: swiftSettings),
        .executableTarget(name: "FuzzDriver", dependencies: fuzzTarget, swiftSettings: swiftSettings),
        .executableTarget(name: "FuzzDriverPacked", dependencies: fuzzTarget, swiftSettings: swiftSettings),
        .executableTarget(name: "FuzzHeader", dependencies: fuzzTarget, swiftSettings: swiftSettings),
        .executableTarget(name: "FuzzVhostUser", dependencies: fuzzTarget, swiftSettings: swiftSettings),
        .executableTarget(name: "MakeSeeds", dependencies: [harness], swiftSettings: swiftSettings),
    ]
)
