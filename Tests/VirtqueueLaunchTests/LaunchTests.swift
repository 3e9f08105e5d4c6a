import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueHeap
import VirtqueueSandbox
import VirtqueueSharedMemory
import VirtqueueTestDevices

/// An isolation level, and its launcher: the only place the tests below tell the levels apart.
enum Level: String, CaseIterable, Sendable {
    case heap, sharedMemory, sandbox

    /// Starts `Device` at this level with `configuration`, for the test device host.
    func launch<Device: DeviceComponent>(
        _ device: Device.Type,
        configuration: DeviceConfiguration = DeviceConfiguration()
    ) throws -> any DeviceHandle {
        let layout = try RegionLayout(queueSizes: [16], dataAreaSize: 32 * 256, features: .all)
        var options = LaunchOptions()
        options.executable = Self.deviceHost
        options.configuration = configuration
        switch self {
        case .heap: return try HeapBackend.launch(device, layout: layout, configuration: configuration)
        case .sharedMemory: return try SharedMemoryBackend.launch(device, layout: layout, options: options)
        case .sandbox: return try SandboxBackend.launch(device, layout: layout, options: options)
        }
    }

    /// Whether `location` is where this level runs devices.
    func runs(at location: DeviceLocation) -> Bool {
        switch (self, location) {
        case (.heap, .thread), (.sharedMemory, .process), (.sandbox, .sandboxedProcess): true
        default: false
        }
    }

    /// The test device host, built beside the test binary.
    static var deviceHost: FilePath {
        var buffer = [CChar](repeating: 0, count: 4097)
        let count = readlink("/proc/self/exe", &buffer, 4096)
        let path = String(decoding: buffer[0..<max(count, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return FilePath(path).removingLastComponent().appending("VirtqueueDeviceHost")
    }
}

/// Sends `text` through `driver` and returns the device's reply.
func send<R: GuestMemory & ~Copyable, N: Notifier>(
    _ text: String,
    on driver: inout DriverQueue<R, N>
) throws -> String {
    var chain = driver.makeChain()
    try driver.appendReadable(to: &chain, copying: Array(text.utf8))
    try driver.appendWritable(to: &chain, capacity: 64)
    try driver.submit(chain)
    try driver.notifyIfNeeded()
    while true {
        try driver.waitForUsed()
        if let used = try driver.takeUsed() {
            var reply = [UInt8](repeating: 0, count: used.writtenByteCount)
            _ = try reply.withUnsafeMutableBytes { try driver.copyWrittenBytes(of: used, into: $0) }
            try driver.free(used)
            return String(decoding: reply, as: UTF8.self)
        }
    }
}

/// Whether `pid` is no child of this process any more: reaped, no zombie left.
func isReaped(_ pid: Int32) -> Bool {
    var status: CInt = 0
    return waitpid(pid, &status, WNOHANG) == -1 && errno == ECHILD
}

/// The same device code, launched at every isolation level through `DeviceHandle`: how each
/// device ended, as every launcher reports it.
@Suite("One launcher shape", .serialized)
struct LaunchTests {
    /// Sends until the driver fails (the device has died) and returns what the device's handle
    /// makes of that failure: `explain(_:)`, the one call at every level.
    func explainedDeath(of device: some DeviceHandle) throws -> DeviceFailure {
        var driver = try device.makeDriverQueue(bufferSize: 256)
        for attempt in 0..<3 {
            do {
                _ = try send("attempt \(attempt)", on: &driver)
            } catch {
                let queueError = error as? VirtqueueError
                #expect(queueError?.code == .peerDied || queueError?.cause == .peerDied, "\(error)")
                return try #require(device.explain(error) as? DeviceFailure, "\(error)")
            }
        }
        throw DidNotDie(deviceName: device.deviceName)
    }

    struct DidNotDie: Error, CustomStringConvertible {
        var deviceName: String
        var description: String { "the device \(deviceName) served three requests instead of dying" }
    }

    /// One round trip on a new driver queue.
    func exchange(_ text: String, with device: some DeviceHandle) throws -> String {
        var driver = try device.makeDriverQueue(bufferSize: 256)
        return try send(text, on: &driver)
    }

    /// Round trips, then a clean stop.
    func serveToTheEnd(_ device: some DeviceHandle) throws {
        var driver = try device.makeDriverQueue(bufferSize: 256)
        for message in ["hello", "virtqueue", String(repeating: "x", count: 60)] {
            #expect(try send(message, on: &driver) == message)
        }
        // A device that runs has not failed, and asking does not wait for it.
        let clock = ContinuousClock()
        let asked = clock.now
        #expect(device.failure() == nil)
        #expect(clock.now - asked < .seconds(1))
    }

    @Test(arguments: Level.allCases)
    func aDeviceThatServesToTheEndFinishes(level: Level) throws {
        let device = try level.launch(EchoDevice.self)
        #expect(device.deviceName == EchoDevice.name)
        #expect(level.runs(at: device.location), "\(device.location)")
        try serveToTheEnd(device)
        #expect(device.stop() == .finished)
        #expect(device.stop() == .finished, "a second stop says the same")
        #expect(device.failure() == nil)
        if let pid = device.location.processID { #expect(isReaped(pid)) }
    }

    @Test(arguments: Level.allCases)
    func aDeviceThatThrowsIsNamedWithItsError(level: Level) throws {
        let device = try level.launch(FailingDevice.self)
        let failure = try explainedDeath(of: device)
        #expect(failure.deviceName == FailingDevice.name)
        #expect(failure.location == device.location)
        #expect(failure.termination == .threw("Failure()"), "\(failure)")
        #expect(failure.description.hasSuffix("threw: Failure()"), "\(failure)")
        // Only a thread hands over the error value itself; a process describes it.
        #expect((failure.underlyingError != nil) == (level == .heap))
        #expect(device.failure()?.termination == .threw("Failure()"))
        #expect(device.stop() == .threw("Failure()"))
    }

    /// A thread cannot be killed on its own: the process levels only.
    @Test(arguments: [Level.sharedMemory, .sandbox])
    func aDeviceKilledWithSIGKILLIsNamedWithTheSignal(level: Level) throws {
        let device = try level.launch(EchoDevice.self)
        let pid = try #require(device.location.processID)
        #expect(try exchange("before", with: device) == "before")
        #expect(kill(pid, SIGKILL) == 0)
        let failure = try explainedDeath(of: device)
        #expect(failure.termination == .signaled(SIGKILL), "\(failure)")
        let kind = level == .sandbox ? "sandboxed device" : "device"
        #expect(failure.description == "\(kind) echo (pid \(pid)) was killed by signal 9 (SIGKILL)")
        #expect(device.stop() == .signaled(SIGKILL))
        #expect(isReaped(pid))
    }

    /// The same printing device at every level: it serves on a thread and in a plain process,
    /// and its sandbox kills it for the call `print` makes — named where the driver looks.
    @Test(arguments: Level.allCases)
    func aDeviceThatPrintsIsStoppedOnlyByTheSandboxWhichNamesTheCall(level: Level) throws {
        let device = try level.launch(PrintingDevice.self)
        guard level == .sandbox else {
            try serveToTheEnd(device)
            #expect(device.stop() == .finished)
            return
        }
        let failure = try explainedDeath(of: device)
        guard case .forbiddenSystemCall(let name, let number) = failure.termination else {
            Issue.record("\(failure)")
            return
        }
        // The C library's fstat of standard output: newfstatat on current glibc, fstat before 2.33.
        #expect(["newfstatat", "fstat"].contains(name), "\(failure)")
        let pid = try #require(device.location.processID)
        #expect(
            failure.description
                == "sandboxed device printing (pid \(pid)) attempted the forbidden system call \(name) (#\(number))"
        )
        #expect(device.stop() == .forbiddenSystemCall(name: name, number: number))
        #expect(isReaped(pid))
    }

    @Test(arguments: Level.allCases)
    func aFactoryThatRefusesItsConfigurationFailsTheLaunch(level: Level) throws {
        let refused = ConfigurationRefused(arguments: ["hello"])
        let failure = try #require(throws: DeviceFailure.self) {
            _ = try level.launch(GreetingDevice.self, configuration: DeviceConfiguration(arguments: ["hello"]))
        }
        #expect(failure.deviceName == GreetingDevice.name)
        #expect(level.runs(at: failure.location), "\(failure.location)")
        #expect(failure.termination == .failedToStart(refused.description), "\(failure)")
        #expect(failure.description.hasSuffix("failed to start: \(refused)"), "\(failure)")
        if level == .heap { #expect(failure.underlyingError as? ConfigurationRefused == refused) }
        if let pid = failure.location.processID { #expect(isReaped(pid), "the launcher reaped the child") }

        // The same device with the configuration it needs.
        let device = try level.launch(
            GreetingDevice.self,
            configuration: DeviceConfiguration(arguments: ["greeting=hi"])
        )
        #expect(try exchange("anything", with: device) == "hi")
        #expect(device.stop() == .finished)
    }
}
