import Glibc
import SystemPackage
import Virtqueue
import VirtqueueConformance
import VirtqueueSandbox
import VirtqueueSharedMemory

/// The test device host, built beside the test binary; it hosts ``ConformanceDevice``.
enum DeviceHostExecutable {
    static var options: LaunchOptions {
        var buffer = [CChar](repeating: 0, count: 4097)
        let count = readlink("/proc/self/exe", &buffer, 4096)
        let path = String(decoding: buffer[0..<max(count, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var options = LaunchOptions()
        options.executable = FilePath(path).removingLastComponent().appending("VirtqueueDeviceHost")
        options.stopGracePeriod = .seconds(10)
        return options
    }
}

extension DeviceHandle {
    /// The conformance suite's `stop`: ends the device and throws why, if it did not finish.
    @Sendable func stopForSuite() throws {
        stop()
        if let failure = failure() { throw failure }
    }
}

/// The shared-memory backend under the conformance suite: a sealed memfd mapped twice and an
/// pair of notification channels for the in-process ends; a real child process for the launched device.
struct SharedMemoryConformanceBackend: ConformanceBackend {
    var name: String { "shared-memory" }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let file = try SharedMemoryFile.create(byteCount: layout.regionSize, name: "conformance")
        let notifiers = try EventNotifier.makePair()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(region: try file.map(), notifier: notifiers.driver, close: notifiers.driver.close),
                device: QueueEnd(region: try file.map(), notifier: notifiers.device, close: notifiers.device.close)
            )
        )
    }

    func withLaunchedDevice<Visitor: LaunchedDeviceVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output? {
        let device = try SharedMemoryBackend.launch(
            ConformanceDevice.self,
            layout: layout,
            options: DeviceHostExecutable.options
        )
        return try visitor.visit(
            LaunchedDevice(
                region: try device.makeRegion(),
                notifier: device.notifier,
                stop: device.stopForSuite,
                kill: { try device.kill() }
            )
        )
    }
}

/// The sandboxed backend under the conformance suite: the same memory and notifiers as shared
/// memory in process, and a seccomp-confined child for the launched device.
struct SandboxConformanceBackend: ConformanceBackend {
    var name: String { "sandbox" }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        try SharedMemoryConformanceBackend().withQueueEnds(layout: layout, visitor)
    }

    func withLaunchedDevice<Visitor: LaunchedDeviceVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output? {
        let device = try SandboxBackend.launch(
            ConformanceDevice.self,
            layout: layout,
            options: DeviceHostExecutable.options
        )
        return try visitor.visit(
            LaunchedDevice(
                region: try device.makeRegion(),
                notifier: device.notifier,
                stop: device.stopForSuite,
                kill: { try device.process.kill() }
            )
        )
    }
}
