/// The files of a new component pair named `name`.
///
/// The pair is a working echo service — the device copies each request's readable bytes back
/// into its writable segments — so the generated test passes before you change anything; the
/// comments say where to put your own logic.
struct Templates {
    /// Where a package without a direct swift-system dependency gets one, and from which version:
    /// the requirement swift-virtqueue itself declares.
    static let systemPackageURL = "https://github.com/apple/swift-system"
    static let systemPackageVersion = "1.8.1"

    let name: String
    /// The identity of the package dependency that provides the `Virtqueue` products (what
    /// `.product(name:package:)` takes: `swift-virtqueue` for a URL dependency, the folder's name
    /// for a path dependency), or `nil` inside swift-virtqueue, where targets are named directly.
    let virtqueuePackage: String?
    /// The identity of the package dependency that provides `SystemPackage` (the test names the
    /// device host by its `FilePath`), or `nil` to add a dependency on swift-system.
    let systemPackage: String?

    var lowercaseName: String {
        var result = ""
        for (index, character) in name.enumerated() {
            if character.isUppercase, index > 0 { result += "-" }
            result += character.lowercased()
        }
        return result
    }

    var library: String { "\(name)Pair" }
    var host: String { "\(name)DeviceHost" }
    var tests: String { "\(name)PairTests" }
    var targetNames: [String] { [library, host, tests] }
    var directories: [String] { ["Sources/\(library)", "Sources/\(host)", "Tests/\(tests)"] }
    var manifestMarker: String { "// new-component-pair: \(name)\n" }

    var files: [(path: String, contents: String)] {
        [
            ("Sources/\(library)/\(name)Device.swift", device),
            ("Sources/\(library)/\(name)Driver.swift", driver),
            ("Sources/\(host)/main.swift", hostMain),
            ("Tests/\(tests)/\(tests).swift", test),
        ]
    }

    /// A dependency on one of swift-virtqueue's library products.
    func dependency(_ module: String) -> String {
        guard let virtqueuePackage else { return "\"\(module)\"" }
        return ".product(name: \"\(module)\", package: \"\(virtqueuePackage)\")"
    }

    var systemPackageDependency: String {
        ".product(name: \"SystemPackage\", package: \"\(systemPackage ?? "swift-system")\")"
    }

    /// What the pair appends to Package.swift. Every module a generated file imports is a
    /// dependency of its target (SwiftPM only builds what is declared).
    var manifestAddition: String {
        let addedDependency =
            systemPackage != nil
            ? ""
            : """
            package.dependencies += [
                .package(url: "\(Self.systemPackageURL)", from: "\(Self.systemPackageVersion)"),
            ]

            """
        let hostDependencies = [
            "\"\(library)\"", dependency("Virtqueue"), dependency("VirtqueueSharedMemory"),
            dependency("VirtqueueSandbox"),
        ]
        let testDependencies = [
            "\"\(library)\"", "\"\(host)\"", dependency("Virtqueue"), dependency("VirtqueueHeap"),
            dependency("VirtqueueSharedMemory"), dependency("VirtqueueSandbox"), systemPackageDependency,
        ]
        func list(_ dependencies: [String]) -> String {
            dependencies.map { "\n            \($0)," }.joined() + "\n        "
        }
        return """

            \(manifestMarker)\
            \(addedDependency)\
            package.targets += [
                .target(
                    name: "\(library)",
                    dependencies: [\(dependency("Virtqueue"))],
                    path: "Sources/\(library)"
                ),
                .executableTarget(
                    name: "\(host)",
                    dependencies: [\(list(hostDependencies))],
                    path: "Sources/\(host)"
                ),
                .testTarget(
                    name: "\(tests)",
                    dependencies: [\(list(testDependencies))],
                    path: "Tests/\(tests)"
                ),
            ]

            """
    }

    var device: String {
        """
        public import Virtqueue

        /// The device half of the \(name) pair. It runs unchanged on a thread, in a child process,
        /// or in a seccomp-confined child.
        ///
        /// Replace the body of `handle` with your device's logic. It receives one request at a
        /// time: read its device-readable segments, write your reply into its device-writable
        /// segments, and return the number of bytes written.
        public struct \(name)Device: DeviceComponent {
            /// How a device host finds this device; keep it stable.
            public static let name = "\(lowercaseName)"

            /// Creates the device from what its launcher hands over: `configuration.arguments`
            /// and `configuration.fileDescriptors` (a disk image's, say). Read what your device
            /// needs here, and throw if it is missing or malformed: the launcher reports the
            /// error, naming the device, at every isolation level. The echo needs nothing.
            public init(configuration: DeviceConfiguration) {}

            public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
                _ request: borrowing DeviceRequest,
                on queue: borrowing DeviceQueue<R, N>
            ) throws -> Int {
                // An echo: copy the readable bytes, in order, into the writable segments.
                // The driver may change its bytes while you read them: copy what you validate.
                var received: [UInt8] = []
                received.reserveCapacity(request.readableByteCount)
                try queue.forEachReadable(in: request) { received += $0 }
                return try received.withUnsafeBytes { try queue.scatter($0, into: request) }
            }
        }

        """
    }

    var driver: String {
        """
        public import Virtqueue

        /// The driver half of the \(name) pair: sends a request and waits for the device's reply.
        ///
        /// It wraps a ``DriverQueue`` of any backend, so the same code drives the device on a
        /// thread, in a process or in a sandbox.
        public struct \(name)Driver<Region: GuestMemory & ~Copyable, Notify: Notifier>: ~Copyable {
            public var queue: DriverQueue<Region, Notify>

            public init(queue: consuming DriverQueue<Region, Notify>) {
                self.queue = queue
            }

            /// Sends `request` and returns the device's reply (at most `replyCapacity` bytes).
            public mutating func send(_ request: [UInt8], replyCapacity: Int = 4096) throws -> [UInt8] {
                var chain = queue.makeChain()
                try queue.appendReadable(to: &chain, copying: request)
                try queue.appendWritable(to: &chain, capacity: min(replyCapacity, queue.bufferSize))
                try queue.submit(chain)
                try queue.notifyIfNeeded()
                while true {
                    try queue.waitForUsed()
                    if let used = try queue.takeUsed() {
                        var reply: [UInt8] = []
                        try queue.forEachSegment(of: used) { isWritable, bytes in
                            if isWritable { reply += bytes }
                        }
                        try queue.free(used)
                        return reply
                    }
                }
            }
        }

        """
    }

    var hostMain: String {
        """
        import \(library)
        import Virtqueue
        import VirtqueueSandbox
        import VirtqueueSharedMemory

        // The device host: the shared-memory and sandboxed isolation levels start this executable
        // in a device role. `runIfDeviceRole` serves the device and exits; it returns only when
        // the executable was started without the device-role arguments. The entry compiles the
        // device's serving loop here, specialised for the device type.
        DeviceHost.runIfDeviceRole(devices: [DeviceHost.Entry(\(name)Device.self)], confinement: SandboxConfinement())
        print("\(host) hosts the \\(\(name)Device.name) device; the \(name) tests start it in a device role.")

        """
    }

    var test: String {
        """
        import SystemPackage
        import Testing
        import Virtqueue
        import VirtqueueHeap
        import VirtqueueSandbox
        import VirtqueueSharedMemory
        import \(library)

        /// Runs the \(name) pair at every isolation level — the device on a thread, in a child
        /// process over shared memory, and in a seccomp-confined child — on every ring: split and
        /// packed, each with and without IN_ORDER. The pair's code is the same on each; only the
        /// negotiated features differ.
        ///
        /// Every launcher returns a `DeviceHandle`, so the pair runs through the same code at
        /// every level; only the launcher depends on it. If the device dies, the test's error
        /// names the device and says why: the error it threw, its exit status or signal, or the
        /// system call its sandbox refused.
        @Suite struct \(tests) {
            enum Isolation: String, CaseIterable, Sendable {
                case heap, sharedMemory, sandbox
            }

            /// The ring the queue runs, chosen by a feature bit.
            enum Ring: String, CaseIterable, Sendable {
                case split, splitInOrder, packed, packedInOrder

                var features: Features {
                    switch self {
                    case .split: .all
                    case .splitInOrder: Features.all.union(.inOrder)
                    case .packed: Features.all.union(.ringPacked)
                    case .packedInOrder: Features.all.union([.ringPacked, .inOrder])
                    }
                }
            }

            static func makeLayout(_ ring: Ring) throws -> RegionLayout {
                try RegionLayout(queueSizes: [64], dataAreaSize: 128 * 4096, features: ring.features)
            }

            /// The device host, built beside this test binary.
            static var hostExecutable: FilePath {
                FilePath(CommandLine.arguments[0]).removingLastComponent().appending("\(host)")
            }

            /// The pair's behaviour: edit these expectations together with the device.
            func exercise<R: GuestMemory & ~Copyable, N: Notifier>(_ driver: inout \(name)Driver<R, N>) throws {
                for message in ["hello", "virtqueue", String(repeating: "x", count: 1000)] {
                    let reply = try driver.send(Array(message.utf8))
                    #expect(String(decoding: reply, as: UTF8.self) == message)
                }
            }

            @Test(arguments: Isolation.allCases, Ring.allCases)
            func echoesAtEveryIsolationLevel(isolation: Isolation, ring: Ring) throws {
                let layout = try Self.makeLayout(ring)
                var options = LaunchOptions()
                options.executable = Self.hostExecutable
                // The device's arguments and descriptors go in `configuration:` (heap) or
                // `options.configuration` (the process levels).
                switch isolation {
                case .heap:
                    try run(try HeapBackend.launch(\(name)Device.self, layout: layout))
                case .sharedMemory:
                    try run(try SharedMemoryBackend.launch(\(name)Device.self, layout: layout, options: options))
                case .sandbox:
                    try run(try SandboxBackend.launch(\(name)Device.self, layout: layout, options: options))
                }
            }

            /// Drives the pair on a launched device, wherever it runs, and stops the device.
            func run(_ device: some DeviceHandle) throws {
                var driver = \(name)Driver(queue: try device.makeDriverQueue())
                do {
                    try exercise(&driver)
                } catch {
                    // A dead device's failure says which device and why (a driver that saw only
                    // `peerDied` learns the cause); any other error stays what it is.
                    let explained = device.explain(error)
                    device.stop()
                    throw explained
                }
                let termination = device.stop()
                #expect(termination == .finished, "the device \\(termination)")
            }
        }

        """
    }
}
