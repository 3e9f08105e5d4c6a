import Testing
import Virtqueue
import VirtqueueConformance

/// The packed ring (VIRTIO_F_RING_PACKED) run by the same `DriverQueue` and `DeviceQueue` as the
/// split ring: round trips at odd queue sizes and over many laps, indirect chains, staged
/// publication, resuming from a cursor mid-lap, and the bytes each side writes into the ring.
@Suite("Packed ring: the queues")
struct PackedQueueTests {
    struct Pair: ~Copyable {
        var driver: DriverQueue<GuardedRegion, CountingNotifier>
        var device: DeviceQueue<GuardedRegion, CountingNotifier>
        let region: GuardedRegion
        let layout: RegionLayout
    }

    static func makePair(
        queueSize: Int,
        features: Features = [.ringPacked, .eventIndex, .indirectDescriptors],
        buffers: Int? = nil,
        bufferSize: Int = 64,
        indirectThreshold: Int = 16
    ) throws -> Pair {
        let layout = try RegionLayout(
            queueSizes: [queueSize],
            dataAreaSize: (buffers ?? 2 * queueSize) * bufferSize,
            features: features
        )
        let region = try GuardedRegion(layout: layout)
        let notifiers = CountingNotifier.makePair()
        return Pair(
            driver: try DriverQueue(
                region: region,
                notifier: notifiers.driver,
                bufferSize: bufferSize,
                indirectThreshold: indirectThreshold
            ),
            device: try DeviceQueue(region: region, notifier: notifiers.device),
            region: region,
            layout: layout
        )
    }

    /// Submits a chain of `readable` segments carrying `tag` and one writable one of 16 bytes.
    static func submit(
        _ driver: inout DriverQueue<GuardedRegion, CountingNotifier>,
        tag: UInt32,
        readable: Int = 1,
        publish: Bool = true
    ) throws -> UInt16 {
        var chain = driver.makeChain()
        for segment in 0..<readable {
            try driver.appendReadable(to: &chain, count: 8) { bytes in
                bytes.storeBytes(of: tag, as: UInt32.self)
                bytes.storeBytes(of: UInt32(segment), toByteOffset: 4, as: UInt32.self)
            }
        }
        try driver.appendWritable(to: &chain, capacity: 16)
        return try driver.submit(chain, publish: publish)
    }

    /// Takes one request, checks its readable segments carry one tag, writes the tag + 1 back,
    /// and completes it.
    static func serve(
        _ device: inout DeviceQueue<GuardedRegion, CountingNotifier>,
        readable: Int = 1,
        tag expected: UInt32? = nil,
        publish: Bool = true
    ) throws -> UInt32? {
        guard let request = try device.nextRequest() else { return nil }
        #expect(request.segmentCount == readable + 1)
        #expect(request.readableByteCount == 8 * readable)
        #expect(request.totalByteCount == 8 * readable + 16)
        #expect(request.writableByteCount == 16)
        var tags: [UInt32] = []
        var segment: UInt32 = 0
        try device.forEachReadable(in: request) { bytes in
            tags.append(bytes.load(as: UInt32.self))
            #expect(bytes.load(fromByteOffset: 4, as: UInt32.self) == segment)
            segment += 1
        }
        let tag = try #require(tags.first ?? expected)
        #expect(tags.allSatisfy { $0 == tag })
        if let expected { #expect(tag == expected) }
        var reply = tag &+ 1
        let written = try withUnsafeBytes(of: &reply) { try device.scatter($0, into: request) }
        try device.complete(request, written: written, publish: publish)
        return tag
    }

    /// Takes one used chain, checks the reply to `tag`, frees it.
    static func takeBack(_ driver: inout DriverQueue<GuardedRegion, CountingNotifier>, tag: UInt32) throws {
        let used = try driver.requireUsed()
        #expect(used.status == .completed)
        #expect(used.writtenByteCount == 4)
        var reply: UInt32 = 0
        let copied = try withUnsafeMutableBytes(of: &reply) { try driver.copyWrittenBytes(of: used, into: $0) }
        #expect(copied == 4)
        #expect(reply == tag &+ 1)
        try driver.free(used)
    }

    @Test(arguments: [1, 3, 5, 257, 32768])
    func roundTripsOverManyLapsAtOddQueueSizes(queueSize: Int) throws {
        var pair = try Self.makePair(queueSize: queueSize, buffers: min(2 * queueSize, 512) + 8)
        #expect(pair.driver.queueSize == queueSize)
        #expect(pair.driver.cursor == .packedStart)
        // Chains of 2 descriptors (1 for rings of 1 and 3, whose last chain would not fit
        // otherwise), in batches of up to 40, enough to go round the ring several times.
        let readable = queueSize >= 4 ? 1 : 0
        let perChain = readable + 1
        let batch = max(1, min(queueSize / perChain, 40))
        let total = queueSize <= 300 ? 6 * queueSize + 7 : 2 * queueSize / perChain + 3
        var tag: UInt32 = 0
        var position = PackedRingPosition.start
        while tag < UInt32(total) {
            let count = min(batch, total - Int(tag))
            for offset in 0..<count {
                _ = try Self.submit(&pair.driver, tag: tag &+ UInt32(offset), readable: readable)
                position = position.advanced(by: perChain, size: queueSize)
            }
            for offset in 0..<count {
                #expect(try Self.serve(&pair.device, readable: readable, tag: tag &+ UInt32(offset)) != nil)
            }
            #expect(try pair.device.nextRequest() == nil)
            for offset in 0..<count {
                try Self.takeBack(&pair.driver, tag: tag &+ UInt32(offset))
            }
            #expect(try pair.driver.takeUsed() == nil)
            tag &+= UInt32(count)
        }
        #expect(pair.driver.inFlightCount == 0)
        #expect(pair.driver.freeDescriptorCount == queueSize)
        #expect(pair.driver.freeBufferCount == pair.driver.bufferCount)
        let cursor = QueueCursor(nextAvailable: position.cursorValue, nextUsed: position.cursorValue)
        #expect(pair.driver.cursor == cursor)
        #expect(pair.device.cursor == cursor)
        #expect(pair.region.guardsIntact)
    }

    /// The ring bytes of `docs/wire-format.md` §12: the driver writes a chain's descriptors at
    /// consecutive positions with the buffer ID, `NEXT` on all but the last, `AVAIL` = 1 and
    /// `USED` = 0; the device writes one used descriptor at its used position.
    @Test func theDriverAndTheDeviceWriteTheSpecifiedBytes() throws {
        var pair = try Self.makePair(queueSize: 5)
        let ring = RingWriter(region: pair.region, layout: pair.layout)
        let id = try Self.submit(&pair.driver, tag: 7, readable: 2)
        #expect(id == 0)
        let descriptors = (0..<3).map { ring.packedDescriptor($0) }
        #expect(descriptors.map(\.id) == [0, 0, 0])
        #expect(descriptors.map(\.flags) == [0x0081, 0x0081, 0x0082])
        #expect(descriptors.map(\.length) == [8, 8, 16])
        let data = UInt64(pair.layout.dataAreaOffset)
        #expect(descriptors.allSatisfy { $0.address >= data && $0.address % 64 == 0 })
        #expect(ring.packedDescriptor(3).flags == 0, "nothing past the chain is written")
        #expect(try Self.serve(&pair.device, readable: 2) == 7)
        let used = ring.packedDescriptor(0)
        #expect(used.id == 0 && used.length == 4 && used.flags == 0x8082)
        #expect(pair.device.cursor == QueueCursor(nextAvailable: 0x8003, nextUsed: 0x8003))
        try Self.takeBack(&pair.driver, tag: 7)
        // The next chain starts at 3 and wraps: 3, 4 with wrap counter 1, then 0 with 0.
        let second = try Self.submit(&pair.driver, tag: 8, readable: 2)
        #expect(ring.packedDescriptor(3).flags == 0x0081)
        #expect(ring.packedDescriptor(4).flags == 0x0081)
        #expect(ring.packedDescriptor(0).flags == 0x8002, "AVAIL 0, USED 1: available for wrap counter 0")
        #expect(ring.packedDescriptor(0).id == second)
        #expect(try Self.serve(&pair.device, readable: 2) == 8)
        #expect(ring.packedDescriptor(3).flags == 0x8082, "used with wrap counter 1 at the used position")
        try Self.takeBack(&pair.driver, tag: 8)
        #expect(pair.driver.cursor == QueueCursor(nextAvailable: 0x0001, nextUsed: 0x0001))
    }

    /// Chains past the indirect threshold go through one ring descriptor with INDIRECT, whose
    /// table is written in the packed format; the device sees every segment.
    @Test func indirectChainsRoundTrip() throws {
        var pair = try Self.makePair(queueSize: 6, buffers: 120, bufferSize: 256, indirectThreshold: 3)
        let ring = RingWriter(region: pair.region, layout: pair.layout)
        for round in 0..<20 {
            let tag = UInt32(round)
            let readable = 3 + round % 3
            let id = try Self.submit(&pair.driver, tag: tag, readable: readable)
            let position = round % 6
            let head = ring.packedDescriptor(position)
            #expect(head.id == id)
            #expect(head.flags & PackedRingFields.indirectFlag != 0)
            #expect(head.length == UInt32(16 * (readable + 1)))
            let table = ring.packedDescriptor(at: head.address)
            #expect(table.flags == 0 && table.length == 8)
            #expect(try Self.serve(&pair.device, readable: readable, tag: tag) == tag)
            try Self.takeBack(&pair.driver, tag: tag)
        }
        #expect(pair.driver.freeBufferCount == pair.driver.bufferCount)
        #expect(pair.driver.freeDescriptorCount == 6)
    }

    /// Staged chains and completions are invisible to the peer until published, then seen in
    /// order; the flags of the first staged descriptor are the ones held back.
    @Test func stagedPublicationShowsNothingUntilPublished() throws {
        var pair = try Self.makePair(queueSize: 7)
        let ring = RingWriter(region: pair.region, layout: pair.layout)
        for tag in 0..<3 { _ = try Self.submit(&pair.driver, tag: UInt32(tag), readable: 1, publish: false) }
        #expect(ring.packedDescriptor(0).flags == 0, "the first staged chain's flags are held back")
        #expect(try pair.device.nextRequest() == nil)
        pair.driver.publish()
        #expect(ring.packedDescriptor(0).flags == 0x0081)
        for tag in 0..<3 {
            #expect(try Self.serve(&pair.device, readable: 1, tag: UInt32(tag), publish: false) != nil)
        }
        #expect(try pair.driver.takeUsed() == nil, "staged completions are not visible")
        pair.device.publish()
        for tag in 0..<3 { try Self.takeBack(&pair.driver, tag: UInt32(tag)) }
        // A staged chain at the driver's used position hides nothing the driver needs.
        _ = try Self.submit(&pair.driver, tag: 9, readable: 1, publish: false)
        #expect(try pair.driver.takeUsed() == nil)
        let broken = pair.driver.isBroken
        #expect(!broken)
        pair.driver.publish()
        #expect(try Self.serve(&pair.device, readable: 1, tag: 9) == 9)
        try Self.takeBack(&pair.driver, tag: 9)
    }

    /// A device stopped mid-lap reports its positions and wrap counters; a new device built
    /// from that cursor takes the next list, nothing lost or repeated.
    @Test func aDeviceResumesFromItsCursorMidLap() throws {
        let queueSize = 5
        let layout = try RegionLayout(
            queueSizes: [queueSize],
            dataAreaSize: 32 * 64,
            features: [.ringPacked, .eventIndex]
        )
        let region = try GuardedRegion(layout: layout)
        let notifiers = CountingNotifier.makePair()
        var driver = try DriverQueue(region: region, notifier: notifiers.driver, bufferSize: 64)
        var device = try DeviceQueue(region: region, notifier: notifiers.device)
        // 4 chains of 2 descriptors: the device ends at position 3 with wrap counter 0.
        for tag in 0..<4 {
            _ = try Self.submit(&driver, tag: UInt32(tag), readable: 1)
            #expect(try Self.serve(&device, readable: 1, tag: UInt32(tag)) != nil)
            try Self.takeBack(&driver, tag: UInt32(tag))
        }
        _ = try Self.submit(&driver, tag: 4, readable: 1)
        let cursor = try device.stop()
        #expect(cursor == QueueCursor(nextAvailable: 0x0003, nextUsed: 0x0003))
        let position = PackedRingPosition(index: 3, wrapCounter: false)
        #expect(cursor.availablePosition == position && cursor.usedPosition == position)
        #expect(QueueCursor(available: position, used: position) == cursor)
        var placement = try layout.placement(ofQueue: 0)
        placement.cursor = cursor
        var resumed = try DeviceQueue(
            memory: region,
            placement: placement,
            notifier: notifiers.device,
            features: layout.features
        )
        #expect(try Self.serve(&resumed, readable: 1, tag: 4) == 4)
        try Self.takeBack(&driver, tag: 4)
        #expect(resumed.cursor == QueueCursor(nextAvailable: 0x8000, nextUsed: 0x8000))
        #expect(driver.cursor == resumed.cursor)
    }

    /// Resubmitting a request from its head has no packed meaning: the call says so.
    @Test func resubmissionIsRefusedOnThePackedRing() throws {
        var pair = try Self.makePair(queueSize: 4)
        let error = #expect(throws: VirtqueueError.self) { _ = try pair.device.resubmittedRequest(head: 0) }
        #expect(error?.code == .featureNotSupported)
    }
}
