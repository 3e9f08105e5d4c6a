import Testing
import Virtqueue
import VirtqueueHeap

/// A device queue stops, reports its cursor, and a new one resumes the running ring from it
/// (vhost-user's GET_VRING_BASE / SET_VRING_BASE) while the driver keeps going.
@Suite("Stopping and resuming a device")
struct ResumeTests {
    static let size = 8

    @Test(arguments: [0, 3, 8, 21])
    func aNewDeviceResumesFromTheCursorNothingLostNothingRepeated(servedBeforeStop: Int) throws {
        let layout = try RegionLayout(queueSizes: [Self.size], dataAreaSize: 64 * 1024, features: .all)
        let region = try HeapRegion(layout: layout)
        let notifiers = HeapNotifier.makePair()
        var driver = try DriverQueue(region: region, notifier: notifiers.driver, bufferSize: 256)
        var nextMessage = 0
        var sent: [UInt16: Int] = [:]
        var replies: [Int] = []
        var served: [Int] = []

        func submit(_ driver: inout DriverQueue<HeapRegion, HeapNotifier>) throws {
            var chain = driver.makeChain()
            try driver.appendReadable(to: &chain, copying: withUnsafeBytes(of: nextMessage) { Array($0) })
            try driver.appendWritable(to: &chain, capacity: 16)
            sent[try driver.submit(chain)] = nextMessage
            nextMessage += 1
        }
        func reap(_ driver: inout DriverQueue<HeapRegion, HeapNotifier>) throws {
            while let used = try driver.takeUsed() {
                var reply = 0
                _ = try withUnsafeMutableBytes(of: &reply) { try driver.copyWrittenBytes(of: used, into: $0) }
                #expect(sent[used.id] == reply)
                replies.append(reply)
                try driver.free(used)
            }
        }
        func serve(_ device: inout DeviceQueue<HeapRegion, HeapNotifier>, limit: Int) throws {
            var count = 0
            while count < limit, let request = try device.nextRequest() {
                var message = 0
                _ = try withUnsafeMutableBytes(of: &message) { try device.gather(request, into: $0) }
                served.append(message)
                let written = try withUnsafeBytes(of: message) { try device.scatter($0, into: request) }
                try device.complete(request, written: written)
                count += 1
            }
        }

        var first = try DeviceQueue(region: region, notifier: notifiers.device)
        var remaining = servedBeforeStop
        while remaining > 0 {
            let batch = min(remaining, 3)
            for _ in 0..<batch { try submit(&driver) }
            try serve(&first, limit: batch)
            try reap(&driver)
            remaining -= batch
        }
        // Made available before the stop, not taken by the first device (two descriptors each).
        for _ in 0..<2 { try submit(&driver) }
        let cursor = try first.stop()
        #expect(cursor.nextAvailable == UInt16(servedBeforeStop))
        #expect(cursor.nextUsed == UInt16(servedBeforeStop))
        let stopped = try #require(throws: VirtqueueError.self) { _ = try first.nextRequest() }
        #expect(stopped.code == .queueStopped)
        #expect(try first.stop() == cursor)

        // The driver keeps going while no device runs.
        for _ in 0..<2 { try submit(&driver) }
        var second = try DeviceQueue(resuming: region, layout, at: cursor, notifier: notifiers.device)
        try serve(&second, limit: .max)
        try reap(&driver)
        for _ in 0..<12 {
            try submit(&driver)
            try serve(&second, limit: .max)
            try reap(&driver)
        }
        #expect(served == Array(0..<nextMessage))
        #expect(replies == Array(0..<nextMessage))
        let inFlight = driver.inFlightCount
        #expect(inFlight == 0)
        let secondCursor = second.cursor
        #expect(secondCursor == QueueCursor(nextAvailable: UInt16(nextMessage), nextUsed: UInt16(nextMessage)))
    }

    @Test func stoppingWithRequestsTakenIsRefusedAndTheQueueKeepsWorking() throws {
        let layout = try RegionLayout(queueSizes: [Self.size], dataAreaSize: 4096, features: .all)
        let region = try HeapRegion(layout: layout)
        let notifiers = HeapNotifier.makePair()
        var driver = try DriverQueue(region: region, notifier: notifiers.driver, bufferSize: 64)
        var device = try DeviceQueue(region: region, notifier: notifiers.device)
        var chain = driver.makeChain()
        try driver.appendReadable(to: &chain, copying: [1, 2, 3])
        try driver.submit(chain)
        let request = try device.requireRequest()
        let error = try #require(throws: VirtqueueError.self) { _ = try device.stop() }
        #expect(error.code == .requestsOutstanding)
        try device.complete(request, written: 0)
        #expect(try device.stop() == QueueCursor(nextAvailable: 1, nextUsed: 1))
        let used = try driver.requireUsed()
        try driver.free(used)
    }
}

/// All 64 feature bits are carried; the ring core refuses the transport bits it does not
/// implement, by name, and passes device-type bits through.
@Suite("Feature bits")
struct FeatureBitTests {
    /// A device queue on a fresh region's queue 0, with `features` negotiated.
    static func makeDevice(
        features: Features,
        supported: Features = .all
    ) throws(VirtqueueError) -> DeviceQueue<HeapRegion, HeapNotifier> {
        let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
        return try DeviceQueue(
            memory: try HeapRegion(layout: layout),
            placement: try layout.placement(ofQueue: 0),
            notifier: HeapNotifier.makePair().device,
            features: features,
            supportedFeatures: supported
        )
    }

    /// The error building a device queue with `features` throws.
    static func refusal(features: Features, supported: Features = .all) throws -> VirtqueueError {
        try #require(throws: VirtqueueError.self) { _ = try makeDevice(features: features, supported: supported) }
    }

    @Test(arguments: [
        (Features.accessPlatform, "ACCESS_PLATFORM", 33),
        (.notificationData, "NOTIFICATION_DATA", 38), (.ringReset, "RING_RESET", 40),
        (Features(bit: 45), "reserved", 45),
    ])
    func anUnimplementedTransportBitIsRefusedByName(feature: Features, name: String, bit: Int) throws {
        let error = try Self.refusal(features: [.version1, feature], supported: Features(rawValue: ~0))
        #expect(error.code == .featureNotSupported)
        #expect(error.message.contains(name))
        #expect(error.message.contains("bit \(bit)"))
        if Features.wireOnlyTransport.contains(feature) {
            // A region header may carry a bit whose wire format is defined (none now:
            // docs/wire-format.md §2.1); the queues refuse it, as above.
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 64, features: feature)
            #expect(layout.features.contains(feature))
            return
        }
        let layout = try #require(throws: VirtqueueError.self) {
            _ = try RegionLayout(queueSizes: [8], dataAreaSize: 64, features: feature)
        }
        #expect(layout.message.contains(name))
    }

    @Test func deviceTypeBitsPassThroughToTheDevice() throws {
        let blockSize = Features(bit: 6)  // VIRTIO_BLK_F_BLK_SIZE
        let high = Features(bit: 60)
        let device = try Self.makeDevice(
            features: [.version1, .eventIndex, blockSize, high],
            supported: Features.all.union([blockSize, high])
        )
        let features = device.features
        #expect(features.contains(blockSize) && features.contains(high))
        #expect(features.unimplementedRingBits.isEmpty)
        #expect(
            Features.negotiate(offered: [blockSize, .ringReset, .eventIndex], wanted: [blockSize, .ringReset]) == [
                .version1, blockSize,
            ]
        )
        // The ring format and IN_ORDER are negotiated like any implemented transport bit.
        #expect(
            Features.negotiate(offered: [.ringPacked, .eventIndex], wanted: [.ringPacked]) == [.version1, .ringPacked]
        )
        #expect(Features.negotiate(offered: [.inOrder, .eventIndex], wanted: [.inOrder]) == [.version1, .inOrder])
    }

    @Test func aDeviceRefusesDeviceTypeBitsItDoesNotSupport() throws {
        let error = try Self.refusal(features: [.version1, Features(bit: 6)])
        #expect(error.code == .featureNotSupported)
        #expect(error.message.contains("device bit 6"))
    }

    @Test func legacyRingsWithoutVersion1AreRefused() throws {
        let error = try Self.refusal(features: [.eventIndex])
        #expect(error.code == .featureNotSupported)
        #expect(error.message.contains("VERSION_1"))
    }

    @Test func theRegionHeaderCarriesDeviceTypeBits() throws {
        let bits: Features = [.eventIndex, Features(bit: 2), Features(bit: 55)]
        let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 64, features: bits)
        let region = try HeapRegion(layout: layout)
        #expect(try RegionLayout(reading: region).features == bits.union(.version1))
    }
}
