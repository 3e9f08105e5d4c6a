import Foundation
import Testing
import Virtqueue
import VirtqueueAsync
import VirtqueueHeap
import VirtqueueSharedMemory
import VirtqueueTestDevices

/// The async API against the blocking one, each side either way, with the contents checked.
@Suite(.timeLimit(.minutes(1))) struct AsyncRoundTripTests {
    /// An async driver against a blocking device on its own thread: a batch of 8 awaited in
    /// reverse order (the device completes them in order, so 7 wait in the table), then
    /// 300 round trips one at a time, each through a sleep in the event loop.
    struct AsyncDriverBlockingDevice: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            let device = startBlockingEcho(pair)
            var driver = try AsyncDriverQueue(DriverQueue(region: pair.region, notifier: pair.driver, bufferSize: 256))
            let buffers = driver.queue.bufferCount
            try await exchange(&driver)
            #expect(driver.queue.freeBufferCount == buffers)
            #expect(driver.queue.inFlightCount == 0)
            pair.closeDriver()
            try await device.value
        }
    }

    @Test(arguments: AsyncBackend.allCases)
    func asyncDriverAgainstBlockingDevice(_ backend: AsyncBackend) async throws {
        try await backend.run(AsyncDriverBlockingDevice())
    }

    @Test(arguments: AsyncBackend.allCases)
    func asyncDriverAgainstBlockingDeviceWithoutEventIndex(_ backend: AsyncBackend) async throws {
        let layout = try RegionLayout(
            queueSizes: [16],
            dataAreaSize: 32 * 256,
            features: Features.all.subtracting(.eventIndex)
        )
        try await backend.run(AsyncDriverBlockingDevice(), layout: layout)
    }

    /// Both sides async, and each side async against a blocking peer, on the packed ring (with
    /// and without EVENT_IDX): the same code, the same exchange.
    @Test(arguments: AsyncBackend.allCases, [Features.all, Features.all.subtracting(.eventIndex)])
    func everyPairingOnThePackedRing(_ backend: AsyncBackend, features: Features) async throws {
        let layout = try RegionLayout(queueSizes: [17], dataAreaSize: 32 * 256, features: features.union(.ringPacked))
        try await backend.run(AsyncDriverBlockingDevice(), layout: layout)
        try await backend.run(BlockingDriverAsyncDevice(), layout: layout)
        try await backend.run(BothAsync(), layout: layout)
    }

    /// The same driver against the blocking `EchoDevice` in a child process (the shared-memory level).
    @Test func asyncDriverAgainstBlockingDeviceProcess() async throws {
        let process = try TestExecutables.launch(EchoDevice.self, async: false)
        var driver = try AsyncDriverQueue(process.makeDriverQueue(bufferSize: 256))
        let buffers = driver.queue.bufferCount
        try await exchange(&driver)
        #expect(driver.queue.freeBufferCount == buffers)
        #expect(process.stop() == .finished)
    }

    /// A blocking driver on its own thread against an async device serving on a task.
    struct BlockingDriverAsyncDevice: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            let served = startAsyncEcho(pair)
            let replies = try await onThread {
                var driver = try DriverQueue(region: pair.region, notifier: pair.driver, bufferSize: 256)
                var mismatches = 0
                for index in 0..<300 where try blockingRoundTrip(message(index), on: &driver) != message(index) {
                    mismatches += 1
                }
                pair.closeDriver()
                return mismatches
            }
            #expect(replies == 0)
            let (code, count) = try await served.value
            #expect(code == .peerDied)
            #expect(count == 300)
        }
    }

    @Test(arguments: AsyncBackend.allCases)
    func blockingDriverAgainstAsyncDevice(_ backend: AsyncBackend) async throws {
        try await backend.run(BlockingDriverAsyncDevice())
    }

    /// Both sides async, sleeping in one event loop: the same exchange.
    struct BothAsync: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            let served = startAsyncEcho(pair)
            var driver = try AsyncDriverQueue(DriverQueue(region: pair.region, notifier: pair.driver, bufferSize: 256))
            try await exchange(&driver)
            #expect(driver.queue.freeBufferCount == driver.queue.bufferCount)
            pair.closeDriver()
            #expect(try await served.value.code == .peerDied)
        }
    }

    @Test(arguments: AsyncBackend.allCases)
    func asyncDriverAgainstAsyncDevice(_ backend: AsyncBackend) async throws {
        try await backend.run(BothAsync())
    }

    /// A blocking driver against `ChecksumDevice` served with the async API in a child process
    /// (`DeviceHost.Entry(async:)`): the checksums of 200 distinct payloads come back right.
    @Test func blockingDriverAgainstAsyncDeviceProcess() async throws {
        let process = try TestExecutables.launch(ChecksumDevice.self, async: true)
        let mismatches = try await onThread {
            var driver = try process.makeDriverQueue(bufferSize: 256)
            var mismatches = 0
            for index in 0..<200 {
                var hash = FNV1a()
                message(index, count: 100).withUnsafeBytes { hash.combine($0) }
                let expected = withUnsafeBytes(of: hash.value.littleEndian) { Array($0) }
                if try blockingRoundTrip(message(index, count: 100), on: &driver).prefix(8) != expected[...] {
                    mismatches += 1
                }
            }
            return mismatches
        }
        #expect(mismatches == 0)
        // Closing the driver's end ends the async loop; the child exits 0, as a blocking one does.
        #expect(process.stop() == .finished)
    }
}

/// Exchanges messages with an echo device through `driver`: a batch of 8 awaited in reverse
/// order, then 300 single round trips. Every reply must match its payload.
func exchange<Region: MemoryRegion, Notify: ReadinessNotifier>(
    _ driver: inout AsyncDriverQueue<Region, Notify>
) async throws {
    var submissions: [Submission] = []
    for index in 0..<8 {
        submissions.append(try driver.submit(echoChain(message(index), on: &driver)))
    }
    try driver.notifyIfNeeded()
    for (index, submission) in submissions.enumerated().reversed() {
        let used = try await driver.completion(of: submission)
        #expect(used.status == .completed)
        #expect(try reply(of: used, on: driver) == message(index))
        try driver.free(used)
    }
    for index in 8..<308 {
        let submission = try driver.submit(echoChain(message(index), on: &driver))
        try driver.notifyIfNeeded()
        let used = try await driver.completion(of: submission)
        let bytes = try reply(of: used, on: driver)
        try driver.free(used)
        #expect(bytes == message(index))
        if bytes != message(index) { return }
    }
}
