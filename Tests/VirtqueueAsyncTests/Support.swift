import Foundation
import Glibc
import SystemPackage
import Virtqueue
import VirtqueueAsync
import VirtqueueHeap
import VirtqueueSharedMemory
import VirtqueueTestDevices

/// The backends whose notifiers expose readiness, so either side may wait with the async API.
/// (``HeapNotifier`` sleeps on a semaphore no event loop can watch: the heap level's async pair
/// is ``HeapEventNotifier``. vhost-user's notifier does not conform yet: see the module's docs.)
enum AsyncBackend: String, CaseIterable, Sendable {
    /// One process: a `HeapRegion` and a `HeapEventNotifier` pair (eventfds).
    case heap
    /// Shared memory: a sealed memfd region and an `EventNotifier` pair (SOCK_SEQPACKET sockets),
    /// both ends in this process.
    case sharedMemory
}

/// A region and both ends of a notifier pair, and how to hang up either end.
struct Pair<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>: Sendable {
    let region: Region
    let driver: Notify
    let device: Notify
    let closeDriver: @Sendable () -> Void
    let closeDevice: @Sendable () -> Void
}

/// Something a test runs once for each backend's pair, generic over its types.
protocol PairTest {
    func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
}

extension AsyncBackend {
    static let layout = try! RegionLayout(queueSizes: [16], dataAreaSize: 32 * 256, features: .all)

    /// Makes this backend's pair for `layout` and runs `test` with it.
    func run(_ test: some PairTest, layout: RegionLayout = Self.layout) async throws {
        switch self {
        case .heap:
            let notifiers = try HeapEventNotifier.makePair()
            try await test.run(
                Pair(
                    region: try HeapRegion(layout: layout),
                    driver: notifiers.driver,
                    device: notifiers.device,
                    closeDriver: { notifiers.driver.close() },
                    closeDevice: { notifiers.device.close() }
                )
            )
        case .sharedMemory:
            let notifiers = try EventNotifier.makePair()
            try await test.run(
                Pair(
                    region: try SharedMemoryRegion.create(layout: layout, name: "virtqueue-async-test"),
                    driver: notifiers.driver,
                    device: notifiers.device,
                    closeDriver: { notifiers.driver.close() },
                    closeDevice: { notifiers.device.close() }
                )
            )
        }
    }
}

/// Runs `body` on a thread of its own — a blocking side must not sleep on the cooperative pool —
/// and returns what it returns.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            continuation.resume(with: Result { try body() })
        }.start()
    }
}

/// The payload of message `index`: distinct bytes for each.
func message(_ index: Int, count: Int = 64) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: index &* 31 &+ $0) }
}

/// A blocking device loop that echoes each request's readable bytes, on the calling thread,
/// until the driver goes. `beforeHandling` runs once a request is taken (a test's gate).
func blockingEcho<Region: MemoryRegion, Notify: Notifier>(
    region: Region,
    notifier: Notify,
    beforeHandling: () -> Void = {}
) throws {
    var device = try DeviceQueue(region: region, notifier: notifier)
    while true {
        do {
            try device.waitForRequests()
        } catch {
            if error.code == .peerDied { return }
            throw error
        }
        while let request = try device.nextRequest() {
            beforeHandling()
            var bytes = [UInt8](repeating: 0, count: request.readableByteCount)
            _ = try bytes.withUnsafeMutableBytes { try device.gather(request, into: $0) }
            let written = try bytes.withUnsafeBytes { try device.scatter($0, into: request) }
            try device.complete(request, written: written)
        }
        do {
            try device.notifyIfNeeded()
        } catch {
            if error.code == .peerDied { return }
            throw error
        }
    }
}

/// Starts the blocking echo device on a thread of its own, serving `pair`'s device end until
/// the driver hangs up.
func startBlockingEcho<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(
    _ pair: Pair<Region, Notify>
) -> Task<Void, any Error> {
    Task.detached { try await onThread { try blockingEcho(region: pair.region, notifier: pair.device) } }
}

/// Serves `pair`'s device end with the async API and `EchoDevice` on a task; its value is the
/// code of the error that ended the loop (peerDied once the driver hangs up) and the number of
/// requests served.
func startAsyncEcho<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(
    _ pair: Pair<Region, Notify>
) -> Task<(code: VirtqueueError.Code?, served: Int), any Error> {
    Task {
        var device = try AsyncDeviceQueue(DeviceQueue(region: pair.region, notifier: pair.device))
        var echo = EchoDevice(configuration: DeviceConfiguration())
        var served = 0
        do {
            try await device.serve { request, queue in
                served += 1
                return try echo.handle(request, on: queue)
            }
        } catch {
            return ((error as? VirtqueueError)?.code, served)
        }
        return (nil, served)
    }
}

/// Sends `payload` through a blocking driver and returns the reply.
func blockingRoundTrip<Region: MemoryRegion, Notify: Notifier>(
    _ payload: [UInt8],
    on driver: inout DriverQueue<Region, Notify>
) throws -> [UInt8] {
    var chain = driver.makeChain()
    try driver.appendReadable(to: &chain, copying: payload)
    try driver.appendWritable(to: &chain, capacity: payload.count)
    try driver.submit(chain)
    try driver.notifyIfNeeded()
    while true {
        try driver.waitForUsed()
        if let used = try driver.takeUsed() {
            var reply = [UInt8](repeating: 0, count: used.writtenByteCount)
            _ = try reply.withUnsafeMutableBytes { try driver.copyWrittenBytes(of: used, into: $0) }
            try driver.free(used)
            return reply
        }
    }
}

/// Builds a chain carrying `payload` with room for its echo.
func echoChain<Region: MemoryRegion, Notify: ReadinessNotifier>(
    _ payload: [UInt8],
    on driver: inout AsyncDriverQueue<Region, Notify>
) throws -> Chain {
    var chain = driver.makeChain()
    try payload.withUnsafeBytes { try driver.appendReadable(to: &chain, copying: $0) }
    try driver.appendWritable(to: &chain, capacity: payload.count)
    return chain
}

/// The bytes the device wrote into `used`.
func reply<Region: MemoryRegion, Notify: ReadinessNotifier>(
    of used: borrowing UsedChain,
    on driver: borrowing AsyncDriverQueue<Region, Notify>
) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: used.writtenByteCount)
    _ = try bytes.withUnsafeMutableBytes { try driver.queue.copyWrittenBytes(of: used, into: $0) }
    return bytes
}

/// The test executables built beside the test binary.
enum TestExecutables {
    static func path(_ name: String) -> FilePath {
        var buffer = [CChar](repeating: 0, count: 4097)
        let count = readlink("/proc/self/exe", &buffer, 4096)
        let path = String(decoding: buffer[0..<max(count, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return FilePath(path).removingLastComponent().appending(name)
    }

    /// The blocking test devices' host.
    static var blockingHost: FilePath { path("VirtqueueDeviceHost") }
    /// The same devices served with the async API.
    static var asyncHost: FilePath { path("VirtqueueAsyncDeviceHost") }

    /// Starts `device` in a child process (the shared-memory level), served by the async host
    /// when `async`, else by the blocking one.
    static func launch<Device: DeviceComponent>(_ device: Device.Type, async: Bool) throws -> DeviceProcess {
        var options = LaunchOptions()
        options.executable = async ? asyncHost : blockingHost
        return try SharedMemoryBackend.launch(device, layout: AsyncBackend.layout, options: options)
    }
}

/// Descriptors of this process that are epoll instances, and threads named as event loops.
enum Leaks {
    static func epollDescriptorCount() -> Int {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return entries.filter { entry in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(entry)"))?
                .contains("eventpoll") ?? false
        }.count
    }

    static func eventLoopThreadCount() -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter { task in
            (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?
                .hasPrefix(EventLoop.threadName) ?? false
        }.count
    }
}
