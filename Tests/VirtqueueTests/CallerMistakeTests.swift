import Testing
import Virtqueue

/// Mistakes a caller can make get typed errors that name the offending value, and leave the
/// queue usable.
@Suite("Caller mistakes")
struct CallerMistakeTests {
    func makeDriver(
        queueSize: Int = 4,
        buffers: Int = 16,
        bufferSize: Int = 64,
        features: Features = [.eventIndex]
    ) throws -> DriverQueue<GuardedRegion, CountingNotifier> {
        let layout = try RegionLayout(
            queueSizes: [queueSize],
            dataAreaSize: buffers * bufferSize,
            features: features
        )
        let region = try GuardedRegion(layout: layout)
        return try DriverQueue(region: region, notifier: CountingNotifier(), bufferSize: bufferSize)
    }

    func expectError(
        _ code: VirtqueueError.Code,
        mentioning value: String,
        _ body: () throws -> Void
    ) {
        do {
            try body()
            Issue.record("expected \(code)")
        } catch let error as VirtqueueError {
            #expect(error.code == code, "\(error)")
            #expect(!error.isPeerViolation)
            #expect(error.message.contains(value), "\(error.message) should mention \(value)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test(arguments: [0, 3, 6, 100, 32769, 65536, -1])
    func invalidQueueSize(size: Int) {
        expectError(.invalidQueueSize, mentioning: "\(size)") {
            _ = try RegionLayout(queueSizes: [size], dataAreaSize: 0, features: [])
        }
    }

    @Test(arguments: [1, 2, 256, 32768])
    func validQueueSize(size: Int) throws {
        let layout = try RegionLayout(queueSizes: [size], dataAreaSize: 64, features: [])
        #expect(layout.queues[0].size == size)
        #expect(layout.queues[0].descriptorTableOffset % 16 == 0)
        #expect(layout.queues[0].availableRingOffset % 2 == 0)
        #expect(layout.queues[0].usedRingOffset % 4 == 0)
        #expect(layout.regionSize >= 16 * size + 6 + 2 * size + 6 + 8 * size + 64)
    }

    @Test func regionTooSmall() throws {
        let layout = try RegionLayout(queueSizes: [64], dataAreaSize: 4096, features: [])
        let region = GuardedRegion(count: layout.regionSize - 1)
        expectError(.regionTooSmall, mentioning: "\(layout.regionSize - 1)") {
            try layout.initialize(region)
        }
    }

    @Test(arguments: [1, 2, 8])
    func misalignedRegion(by offset: Int) throws {
        let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 256, features: [])
        let region = GuardedRegion(count: layout.regionSize, misalignment: offset)
        expectError(.misaligned, mentioning: "not 16-byte aligned") {
            try layout.initialize(region)
        }
        expectError(.misaligned, mentioning: "not 16-byte aligned") {
            _ = try DeviceQueue(region: region, notifier: CountingNotifier())
        }
    }

    @Test func payloadLargerThanItsBuffer() throws {
        var driver = try makeDriver()
        var chain = driver.makeChain()
        expectError(.payloadTooLarge, mentioning: "65") {
            try driver.appendReadable(to: &chain, copying: [UInt8](repeating: 1, count: 65))
        }
        expectError(.payloadTooLarge, mentioning: "100") {
            try driver.appendWritable(to: &chain, capacity: 100)
        }
        #expect(chain.segmentCount == 0)
        try driver.discard(chain)
        #expect(driver.freeBufferCount == 16)
    }

    @Test func chainLongerThanTheQueue() throws {
        var driver = try makeDriver(queueSize: 4)
        var chain = driver.makeChain()
        for _ in 0..<4 { try driver.appendWritable(to: &chain) }
        expectError(.chainTooLong, mentioning: "5") {
            try driver.appendWritable(to: &chain)
        }
        #expect(chain.segmentCount == 4)
        try driver.submit(chain)
    }

    @Test func ringFull() throws {
        var driver = try makeDriver(queueSize: 4)
        for _ in 0..<2 {
            var chain = driver.makeChain()
            try driver.appendWritable(to: &chain)
            try driver.appendWritable(to: &chain)
            try driver.submit(chain)
        }
        var chain = driver.makeChain()
        expectError(.ringFull, mentioning: "4") {
            try driver.appendWritable(to: &chain)
        }
        try driver.discard(chain)
    }

    @Test func poolExhausted() throws {
        var driver = try makeDriver(queueSize: 8, buffers: 3)
        var chain = driver.makeChain()
        for _ in 0..<3 { try driver.appendWritable(to: &chain) }
        expectError(.poolExhausted, mentioning: "3") {
            try driver.appendWritable(to: &chain)
        }
        try driver.discard(chain)
        #expect(driver.freeBufferCount == 3)
        #expect(driver.freeDescriptorCount == 8)
    }

    @Test func readableAfterWritable() throws {
        var driver = try makeDriver()
        var chain = driver.makeChain()
        try driver.appendWritable(to: &chain, capacity: 0)
        expectError(.readableAfterWritable, mentioning: "3 bytes") {
            try driver.appendReadable(to: &chain, copying: [1, 2, 3])
        }
        try driver.discard(chain)
    }

    @Test func emptyChain() throws {
        var driver = try makeDriver()
        expectError(.emptyChain, mentioning: "no segments") {
            try driver.submit(driver.makeChain())
        }
    }

    @Test func chainOfAnotherQueue() throws {
        var first = try makeDriver()
        var second = try makeDriver()
        var chain = first.makeChain()
        try first.appendWritable(to: &chain)
        do {
            try second.submit(chain)
            Issue.record("a foreign chain was submitted")
        } catch {
            #expect(error.code == .notOwned)
            #expect(error.message.contains("queue #"))
        }
        #expect(second.inFlightCount == 0)
    }

    @Test func writtenLengthLargerThanTheRequestHolds() throws {
        let layout = try RegionLayout(queueSizes: [4], dataAreaSize: 1024, features: .all)
        let region = try GuardedRegion(layout: layout)
        var driver = try DriverQueue(region: region, notifier: CountingNotifier(), bufferSize: 64)
        var device = try DeviceQueue(region: region, notifier: CountingNotifier())
        var chain = driver.makeChain()
        try driver.appendWritable(to: &chain, capacity: 32)
        try driver.submit(chain)
        let request = try device.requireRequest()
        do {
            try device.complete(request, written: 33)
            Issue.record("an oversized written length was accepted")
        } catch {
            #expect(error.code == .writtenLengthTooLarge)
            #expect(error.message.contains("33"))
        }
        // The request was still returned, with nothing written, so the driver loses nothing.
        let used = try driver.requireUsed()
        #expect(used.writtenByteCount == 0)
        try driver.free(used)
        #expect(driver.freeBufferCount == driver.bufferCount)
        #expect(device.isBroken == false)
    }

    @Test func unsupportedFeatureOnAttach() throws {
        let layout = try RegionLayout(queueSizes: [4], dataAreaSize: 1024, features: .all)
        let region = try GuardedRegion(layout: layout)
        #expect(throws: VirtqueueError.self) {
            _ = try DeviceQueue(region: region, notifier: CountingNotifier(), supportedFeatures: [.eventIndex])
        }
    }

    @Test func noSuchQueue() throws {
        let layout = try RegionLayout(queueSizes: [4], dataAreaSize: 1024, features: .all)
        let region = try GuardedRegion(layout: layout)
        expectError(.noSuchQueue, mentioning: "3") {
            _ = try DriverQueue(region: region, notifier: CountingNotifier(), queueIndex: 3)
        }
    }

    @Test(arguments: [0, 8, 24, 100])
    func invalidBufferSize(size: Int) throws {
        let layout = try RegionLayout(queueSizes: [4], dataAreaSize: 1024, features: .all)
        let region = try GuardedRegion(layout: layout)
        expectError(.invalidConfiguration, mentioning: "\(size)") {
            _ = try DriverQueue(region: region, notifier: CountingNotifier(), bufferSize: size)
        }
    }
}
