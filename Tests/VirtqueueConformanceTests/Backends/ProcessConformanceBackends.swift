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

    /// A sealed memfd and the two notification channels the shared-memory backend hands its
    /// device process, built here: this process keeps `side`'s notifier (and a liveness socket,
    /// as a launched device's host does), and hands over the other side's ends of both channels,
    /// the other liveness socket and a copy of the memfd.
    func withProcessEnds<Visitor: ProcessEndsVisitor>(
        layout: RegionLayout,
        keeping side: QueueSide,
        _ visitor: Visitor
    ) throws -> ProcessEndsOutcome<Visitor.Output> {
        let file = try SharedMemoryFile.create(byteCount: layout.regionSize, name: "conformance")
        let memory = try file.duplicateFileDescriptor()
        // Each channel: the wait end stays with the side that is notified through it.
        let towardsDevice = try EventNotifier.makeChannel()
        let towardsDriver = try EventNotifier.makeChannel()
        let liveness = try socketPair()
        let keptWait = side == .driver ? towardsDriver.waitEnd : towardsDevice.waitEnd
        let keptNotify = side == .driver ? towardsDevice.notifyEnd : towardsDriver.notifyEnd
        let local = EventNotifier(waitingOn: keptWait, notifying: keptNotify, liveness: .connection(liveness.0))
        let remote = PortableEnd(
            mappings: [
                PortableMapping(descriptor: memory.rawValue, byteCount: layout.regionSize)
            ],
            notifier: PortableNotifier(
                notifyDescriptor: (side == .driver ? towardsDriver.notifyEnd : towardsDevice.notifyEnd).rawValue,
                waitDescriptor: (side == .driver ? towardsDevice.waitEnd : towardsDriver.waitEnd).rawValue,
                heldDescriptors: [liveness.1.rawValue]
            )
        )
        return .visited(
            try visitor.visit(
                ProcessEnds(
                    local: QueueEnd(region: try file.map(), notifier: local, close: local.close),
                    remote: remote
                )
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

    func withProcessEnds<Visitor: ProcessEndsVisitor>(
        layout: RegionLayout,
        keeping side: QueueSide,
        _ visitor: Visitor
    ) throws -> ProcessEndsOutcome<Visitor.Output> {
        try SharedMemoryConformanceBackend().withProcessEnds(layout: layout, keeping: side, visitor)
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

/// A connected `AF_UNIX` stream socket pair, close-on-exec.
func socketPair() throws -> (FileDescriptor, FileDescriptor) {
    var sockets: [CInt] = [-1, -1]
    let type = CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue)
    guard socketpair(AF_UNIX, type, 0, &sockets) == 0 else { throw Errno(rawValue: errno) }
    return (FileDescriptor(rawValue: sockets[0]), FileDescriptor(rawValue: sockets[1]))
}
