import CVirtqueueSandbox
import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueSandbox
import VirtqueueSharedMemory
import VirtqueueTestDevices

/// The test device host, built beside the test binary.
enum Host {
    static var options: LaunchOptions {
        var buffer = [CChar](repeating: 0, count: 4097)
        let count = readlink("/proc/self/exe", &buffer, 4096)
        let path = String(decoding: buffer[0..<max(count, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var options = LaunchOptions()
        options.executable = FilePath(path).removingLastComponent().appending("VirtqueueDeviceHost")
        options.stopGracePeriod = .seconds(10)
        return options
    }

    static func layout(queueSize: Int = 64, buffers: Int = 128, bufferSize: Int = 256) throws -> RegionLayout {
        try RegionLayout(queueSizes: [queueSize], dataAreaSize: buffers * bufferSize, features: .all)
    }
}

/// Sends one request to the device and returns its answer (or the error that ended the wait).
func send<R: GuestMemory & ~Copyable, N: Notifier>(
    _ text: String,
    on driver: inout DriverQueue<R, N>
) throws(VirtqueueError) -> Int64? {
    var chain = driver.makeChain()
    try driver.appendReadable(to: &chain, copying: Array(text.utf8))
    try driver.appendWritable(to: &chain, capacity: 8)
    try driver.submit(chain)
    try driver.notifyIfNeeded()
    while true {
        try driver.waitForUsed()
        if let used = try driver.takeUsed() {
            var answer: Int64 = 0
            _ = try withUnsafeMutableBytes(of: &answer) { bytes throws(VirtqueueError) in
                try driver.copyWrittenBytes(of: used, into: bytes)
            }
            let written = used.writtenByteCount
            try driver.free(used)
            return written == 8 ? Int64(littleEndian: answer) : nil
        }
    }
}

@Suite("Sandboxed backend", .serialized)
struct SandboxTests {
    /// Each forbidden operation, and the system call the report must name.
    static let forbidden: [(operation: String, systemCall: String)] = [
        ("openat", "openat"),
        ("socket", "socket"),
        ("connect", "connect"),
        ("execve", "execve"),
        ("fork", "clone"),
        ("kill", "kill"),
        ("ptrace", "ptrace"),
        ("mmap-exec", "mmap"),
        ("mprotect-exec", "mprotect"),
        ("write-foreign-fd", "write"),
        ("getpid", "getpid"),
        // On the notification sockets, only recvfrom on kick and sendto on call are allowed.
        ("read-kick", "read"),
        ("sendto-kick", "sendto"),
        ("recvfrom-call", "recvfrom"),
    ]

    @Test(arguments: forbidden.indices)
    func forbiddenCallKillsTheDeviceAndIsReportedByName(index: Int) throws {
        let (operation, systemCall) = Self.forbidden[index]
        let device = try SandboxBackend.launch(
            ForbiddenCallDevice.self,
            layout: try Host.layout(),
            restart: .onFailure(maximumRestarts: 1),
            options: Host.options
        )
        var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier)
        // An allowed request first: the device is alive and confined.
        #expect(try send("nothing", on: &driver) == -2)
        do {
            _ = try send(operation, on: &driver)
            Issue.record("\(operation) was allowed")
        } catch {
            #expect(error.code == .peerDied, "\(error)")
            // One call turns the driver's peerDied into the cause, named.
            let explained = try #require(device.explain(error) as? DeviceFailure)
            #expect(explained.termination.forbiddenCall == systemCall, "\(explained)")
        }
        #expect(driver.isBroken == true)
        // The chain in flight comes back, abandoned.
        var abandoned = 0
        while let chain = driver.takeAbandoned() {
            #expect(chain.status == UsedChain.Status.abandoned(.peerDied))
            try driver.free(chain)
            abandoned += 1
        }
        #expect(abandoned == 1)
        #expect(driver.freeBufferCount == driver.bufferCount)
        let failure = try #require(device.failure())
        #expect(failure.termination.forbiddenCall == systemCall, "\(failure)")
        #expect(failure.location == device.location)
        #expect(
            failure.description.hasPrefix(
                "sandboxed device forbidden (pid \(device.process.processID)) attempted the forbidden system call "
                    + "\(systemCall) (#"
            ),
            "\(failure)"
        )
        // The parent carries on, and a relaunched device serves new requests.
        let replacement = try device.relaunch()
        var second = try DriverQueue(region: try replacement.makeRegion(), notifier: replacement.notifier)
        #expect(try send("nothing", on: &second) == -2)
        #expect(replacement.stop() == .finished)
    }

    @Test func allowedLoopMovesOneMillionBuffersUnderTheFilter() throws {
        let device = try SandboxBackend.launch(
            ChecksumDevice.self,
            layout: try Host.layout(queueSize: 256, buffers: 1024, bufferSize: 64),
            options: Host.options
        )
        var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier, bufferSize: 64)
        let total: UInt64 = 1_000_000
        var sent: UInt64 = 0
        var received: UInt64 = 0
        var expected: [UInt16: UInt64] = [:]
        var mismatches = 0
        while received < total {
            while sent < total, driver.freeDescriptorCount >= 2, driver.freeBufferCount >= 2 {
                var chain = driver.makeChain()
                var hash = FNV1a()
                try driver.appendReadable(to: &chain, count: 32) { buffer in
                    for index in 0..<32 { buffer[index] = UInt8(truncatingIfNeeded: sent &* 131 &+ UInt64(index)) }
                    hash.combine(UnsafeRawBufferPointer(buffer))
                }
                try driver.appendWritable(to: &chain, capacity: 8)
                expected[try driver.submit(chain)] = hash.value
                sent += 1
            }
            try driver.notifyIfNeeded()
            try driver.waitForUsed()
            while let used = try driver.takeUsed() {
                var answer: [UInt8] = []
                try driver.forEachSegment(of: used) { isWritable, bytes in if isWritable { answer += bytes } }
                let checksum = answer.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
                if expected.removeValue(forKey: used.id) != checksum { mismatches += 1 }
                try driver.free(used)
                received += 1
            }
        }
        #expect(mismatches == 0)
        #expect(received == total)
        #expect(device.stop() == .finished)
        #expect(device.failure() == nil)
    }

    @Test func neverRestartPolicyRefusesARelaunch() throws {
        let device = try SandboxBackend.launch(
            ForbiddenCallDevice.self,
            layout: try Host.layout(),
            options: Host.options
        )
        var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier)
        #expect(throws: VirtqueueError.self) { _ = try send("openat", on: &driver) }
        #expect(device.failure()?.termination.forbiddenCall == "openat")
        #expect {
            _ = try device.relaunch()
        } throws: { error in
            (error as? SandboxError)?.code == .restartLimitReached
        }
    }

    @Test func restartPolicyCountsRelaunches() throws {
        var device = try SandboxBackend.launch(
            ForbiddenCallDevice.self,
            layout: try Host.layout(),
            restart: .onFailure(maximumRestarts: 2),
            options: Host.options
        )
        for round in 0..<3 {
            var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier)
            #expect(throws: VirtqueueError.self) { _ = try send("socket", on: &driver) }
            #expect(device.failure()?.termination.forbiddenCall == "socket")
            #expect(device.restartCount == round)
            if round < 2 {
                device = try device.relaunch()
            } else {
                #expect(throws: SandboxError.self) { _ = try device.relaunch() }
            }
        }
    }

    /// The cheap confinement, checked from outside through /proc while the device runs.
    @Test func childIsConfinedBeforeItServes() throws {
        let device = try SandboxBackend.launch(
            ForbiddenCallDevice.self,
            layout: try Host.layout(),
            options: Host.options
        )
        var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier)
        #expect(try send("nothing", on: &driver) == -2)
        let pid = device.process.processID
        let status = try String(contentsOf: "/proc/\(pid)/status")
        #expect(status.contains("Seccomp:\t2"), "the seccomp filter is loaded")
        #expect(status.contains("NoNewPrivs:\t1"))
        #expect(try String(contentsOf: "/proc/\(pid)/environ").isEmpty, "the environment is empty")
        #expect(try readLink("/proc/\(pid)/cwd") == "/")
        let limits = try String(contentsOf: "/proc/\(pid)/limits")
        let openFiles = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") } ?? ""
        #expect(openFiles.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).first == "7")
        let processes = limits.split(separator: "\n").first { $0.hasPrefix("Max processes") } ?? ""
        #expect(processes.split(separator: " ", omittingEmptySubsequences: true).dropFirst(2).first == "0")
        // Exactly stdout, stderr, the region file, the two notification sockets and the liveness
        // socket: no stdin.
        let descriptors = try listDirectory("/proc/\(pid)/fd").compactMap(Int32.init).sorted()
        #expect(descriptors == [1, 2, 3, 4, 5, 6])
        #expect(device.stop() == .finished)
    }

    @Test func policyRoundTripsThroughItsArgumentEncoding() throws {
        let policy = SandboxPolicy.deviceLoop.allowing(
            .init("pread64", .onFileDescriptors([.device(0), .device(2)])),
            .init("fdatasync"),
            .init("clone", .withFlags(argument: 0, mask: 0x1_0000)),
            .init("clone3", .failsWith(errno: ENOSYS))
        )
        let decoded = try #require(SandboxPolicy(argumentEncoding: policy.argumentEncoding))
        #expect(Set(decoded.rules) == Set(policy.rules))
        #expect(SandboxPolicy(argumentEncoding: "clone@flags=0:0") == nil)
        #expect(SandboxPolicy(argumentEncoding: "clone@flags=9:10000") == nil)
        #expect(SandboxPolicy(argumentEncoding: "clone3@errno=0") == nil)
        #expect(SandboxPolicy(argumentEncoding: "read@fd=nonsense") == nil)
        #expect(SandboxPolicy(argumentEncoding: "read@what") == nil)
        #expect(SandboxPolicy(argumentEncoding: "re ad") == nil)
    }

    @Test func anUnknownSystemCallNameFailsTheLaunch() throws {
        let policy = SandboxPolicy.deviceLoop.allowing(.init("no_such_call"))
        // The child cannot load the policy: it exits with the confinement-failed code before
        // serving or reporting, and the launch fails.
        #expect {
            _ = try SandboxBackend.launch(
                ForbiddenCallDevice.self,
                layout: try Host.layout(),
                policy: policy,
                options: Host.options
            )
        } throws: { error in
            guard let error = error as? SandboxError else { return false }
            return error.code == .notConfined && error.confinementFailure == .endedBeforeReport
                && error.exitStatus == .exited(DeviceHost.ExitCode.confinementFailed)
        }
    }
}

extension DeviceTermination {
    /// The forbidden system call's name, when the sandbox killed the device for one.
    var forbiddenCall: String? {
        if case .forbiddenSystemCall(let name, _) = self { return name }
        return nil
    }
}

func readLink(_ path: String) throws -> String {
    var buffer = [CChar](repeating: 0, count: 4097)
    let count = readlink(path, &buffer, 4096)
    guard count >= 0 else { throw Errno(rawValue: errno) }
    return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func listDirectory(_ path: String) throws -> [String] {
    guard let directory = opendir(path) else { throw Errno(rawValue: errno) }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

extension String {
    init(contentsOf path: String) throws {
        guard let file = fopen(path, "r") else { throw Errno(rawValue: errno) }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count <= 0 { break }
            bytes += buffer[0..<count]
        }
        self = String(decoding: bytes, as: UTF8.self)
    }
}
