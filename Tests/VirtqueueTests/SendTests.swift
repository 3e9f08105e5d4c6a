import Testing
import Virtqueue
import VirtqueueConformance

/// `DriverQueue.send(count:publish:_:)`: the one-call form of `makeChain`, `appendReadable` and
/// `submit` for a one-segment chain. It must leave the ring, the driver's state and the device's
/// view exactly as the three calls do, on every ring format, and refuse what they refuse with
/// the same errors, calling `fill` only for a chain it sends.
@Suite("One-call send")
struct SendTests {
    static let formats: [Features] = [
        [.eventIndex, .indirectDescriptors],
        [.eventIndex, .indirectDescriptors, .inOrder],
        [.ringPacked, .eventIndex, .indirectDescriptors],
        [.ringPacked, .eventIndex, .indirectDescriptors, .inOrder],
    ]
    static let size = 8
    static let bufferSize = 64

    struct Pair: ~Copyable {
        var driver: DriverQueue<GuardedRegion, CountingNotifier>
        var device: DeviceQueue<GuardedRegion, CountingNotifier>
        let region: GuardedRegion
    }

    /// A queue of 8 entries and a pool of `buffers` buffers of 64 bytes.
    static func makePair(features: Features, buffers: Int = 16) throws -> Pair {
        let layout = try RegionLayout(
            queueSizes: [size],
            dataAreaSize: buffers * bufferSize,
            features: features
        )
        let region = try GuardedRegion(layout: layout)
        let notifiers = CountingNotifier.makePair()
        return Pair(
            driver: try DriverQueue(region: region, notifier: notifiers.driver, bufferSize: bufferSize),
            device: try DeviceQueue(region: region, notifier: notifiers.device),
            region: region
        )
    }

    /// The message of chain `index`: `count` bytes, each `index &+ offset`.
    static func fill(_ bytes: UnsafeMutableRawBufferPointer, index: Int) {
        for offset in 0..<bytes.count { bytes[offset] = UInt8(truncatingIfNeeded: index &+ offset) }
    }

    static func sendByThreeCalls(
        _ driver: inout DriverQueue<GuardedRegion, CountingNotifier>,
        count: Int,
        index: Int,
        publish: Bool
    ) throws -> UInt16 {
        var chain = driver.makeChain()
        try driver.appendReadable(to: &chain, count: count) { fill($0, index: index) }
        return try driver.submit(chain, publish: publish)
    }

    static func regionBytes(_ region: GuardedRegion) -> [UInt8] {
        region.withUnsafeMutableBytes { Array($0) }
    }

    /// Drives two pairs through the same rounds — one sending with `send`, the other with the
    /// three calls — and compares the shared memory byte for byte, the drivers' counts and ids,
    /// and what the devices read, after every step.
    @Test(arguments: formats)
    func sendWritesWhatTheThreeCallsWrite(features: Features) throws {
        var fused = try Self.makePair(features: features)
        var threeCalls = try Self.makePair(features: features)
        var index = 0
        for round in 0..<5 {
            // A batch that fills the ring, some published at once and some staged, of lengths
            // from 0 to the buffer size; then every request served and every used chain freed.
            let batch = round == 2 ? Self.size : 1 + round
            var ids: [UInt16] = []
            for position in 0..<batch {
                let count = (index * 13) % (Self.bufferSize + 1)
                let publish = (position + round) % 3 != 0
                let sent = try fused.driver.send(count: count, publish: publish) { Self.fill($0, index: index) }
                let expected = try Self.sendByThreeCalls(
                    &threeCalls.driver,
                    count: count,
                    index: index,
                    publish: publish
                )
                #expect(sent == expected)
                ids.append(sent)
                index += 1
            }
            fused.driver.publish()
            threeCalls.driver.publish()
            #expect(Self.regionBytes(fused.region) == Self.regionBytes(threeCalls.region))
            #expect(fused.driver.inFlightCount == threeCalls.driver.inFlightCount)
            #expect(fused.driver.freeDescriptorCount == threeCalls.driver.freeDescriptorCount)
            #expect(fused.driver.freeBufferCount == threeCalls.driver.freeBufferCount)
            #expect(fused.driver.cursor == threeCalls.driver.cursor)

            for id in ids {
                let request = try fused.device.requireRequest()
                let other = try threeCalls.device.requireRequest()
                #expect(request.id == id && other.id == id)
                var seen: [UInt8] = []
                try fused.device.forEachReadable(in: request) { seen += $0 }
                var expected: [UInt8] = []
                try threeCalls.device.forEachReadable(in: other) { expected += $0 }
                #expect(seen == expected)
                #expect(request.writableByteCount == 0)
                try fused.device.complete(request, written: 0)
                try threeCalls.device.complete(other, written: 0)
            }
            for _ in ids {
                guard let used = try fused.driver.takeUsed(), let other = try threeCalls.driver.takeUsed() else {
                    Issue.record("a completed chain did not come back")
                    return
                }
                #expect(used.id == other.id && used.writtenByteCount == 0)
                try fused.driver.free(used)
                try threeCalls.driver.free(other)
            }
            #expect(try fused.driver.takeUsed() == nil)
            #expect(Self.regionBytes(fused.region) == Self.regionBytes(threeCalls.region))
            #expect(fused.driver.freeBufferCount == fused.driver.bufferCount)
        }
        #expect(fused.region.guardsIntact)
    }

    @Test(arguments: formats)
    func aPayloadLargerThanABufferIsRefusedBeforeFill(features: Features) throws {
        var pair = try Self.makePair(features: features)
        var filled = false
        let error = try #require(throws: VirtqueueError.self) {
            try pair.driver.send(count: Self.bufferSize + 1) { _ in filled = true }
        }
        #expect(error.code == .payloadTooLarge)
        let negative = try #require(throws: VirtqueueError.self) {
            try pair.driver.send(count: -1) { _ in filled = true }
        }
        #expect(negative.code == .payloadTooLarge)
        #expect(!filled)
        #expect(pair.driver.freeBufferCount == pair.driver.bufferCount)
        #expect(pair.driver.freeDescriptorCount == Self.size)
        #expect(pair.driver.inFlightCount == 0)
    }

    /// More buffers than descriptors: the ring fills first. Fewer: the pool runs out first.
    @Test(arguments: formats, [(buffers: 16, code: VirtqueueError.Code.ringFull), (4, .poolExhausted)])
    func aFullRingOrAnEmptyPoolIsRefusedBeforeFill(
        features: Features,
        limit: (buffers: Int, code: VirtqueueError.Code)
    ) throws {
        var pair = try Self.makePair(features: features, buffers: limit.buffers)
        let room = min(limit.buffers, Self.size)
        for index in 0..<room {
            try pair.driver.send(count: 8) { Self.fill($0, index: index) }
        }
        var filled = false
        let error = try #require(throws: VirtqueueError.self) {
            try pair.driver.send(count: 8) { _ in filled = true }
        }
        #expect(error.code == limit.code)
        #expect(!filled)
        #expect(pair.driver.inFlightCount == room)
        // The queue is not broken by a refusal: the chains in flight come back and more go out.
        for _ in 0..<room {
            let request = try pair.device.requireRequest()
            try pair.device.complete(request, written: 0)
        }
        while let used = try pair.driver.takeUsed() { try pair.driver.free(used) }
        try pair.driver.send(count: 8) { Self.fill($0, index: 0) }
        #expect(pair.driver.inFlightCount == 1)
    }

    @Test(arguments: formats)
    func aBrokenQueueRefusesASendBeforeFill(features: Features) throws {
        var pair = try Self.makePair(features: features)
        try pair.driver.send(count: 8) { Self.fill($0, index: 0) }
        pair.driver.markBroken(VirtqueueError(.peerDied, "test: the device went away"))
        var filled = false
        let error = try #require(throws: VirtqueueError.self) {
            try pair.driver.send(count: 8) { _ in filled = true }
        }
        #expect(error.code == .queueBroken)
        #expect(!filled)
        // The chain sent before the break is still accounted for.
        guard let abandoned = pair.driver.takeAbandoned() else {
            Issue.record("the chain sent before the break did not come back")
            return
        }
        #expect(abandoned.status == .abandoned(.peerDied))
        try pair.driver.free(abandoned)
        #expect(pair.driver.freeBufferCount == pair.driver.bufferCount)
    }
}
