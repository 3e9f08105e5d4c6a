import Testing
import Virtqueue
import VirtqueueHeap

/// The device's private record of a request: the first four segments in its head's own slots,
/// the rest in the overflow store, given back when the request is completed or dropped.
@Suite("The device's segment store")
struct DeviceSegmentStoreTests {
    /// Submits a chain of one readable buffer per entry of `readable` and `writable` writable
    /// buffers of 16 bytes.
    static func submit(
        _ readable: [[UInt8]],
        writable: Int,
        on driver: inout DriverQueue<HeapRegion, HeapNotifier>
    ) throws {
        var chain = driver.makeChain()
        for bytes in readable { try driver.appendReadable(to: &chain, copying: bytes) }
        for _ in 0..<writable { try driver.appendWritable(to: &chain, capacity: 16) }
        try driver.submit(chain)
    }

    /// The readable bytes of `request`, segment by segment.
    static func readable(
        _ request: borrowing DeviceRequest,
        on device: borrowing DeviceQueue<HeapRegion, HeapNotifier>
    ) throws -> [[UInt8]] {
        var segments: [[UInt8]] = []
        try device.forEachReadable(in: request) { bytes in segments.append(Array(bytes)) }
        return segments
    }

    @Test func aLongChainKeepsItsSegmentsInOrderAcrossTheOverflowStore() throws {
        let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
        let region = try HeapRegion(layout: layout)
        let notifiers = HeapNotifier.makePair()
        var driver = try DriverQueue(region: region, notifier: notifiers.driver, bufferSize: 64)
        var device = try DeviceQueue(region: region, notifier: notifiers.device, segmentCapacity: 32)
        let readable = (0..<5).map { segment in (0..<(segment + 3)).map { UInt8(segment * 16 + $0) } }
        for round in 0..<3 {
            try Self.submit(readable, writable: 3, on: &driver)
            let request = try device.requireRequest()
            #expect(request.segmentCount == 8, "round \(round)")
            #expect(request.readableByteCount == readable.joined().count)
            #expect(request.writableByteCount == 48)
            #expect(try Self.readable(request, on: device) == readable)
            var room: [Int] = []
            try device.forEachWritable(in: request) { bytes in room.append(bytes.count) }
            #expect(room == [16, 16, 16])
            let reply = (0..<40).map { UInt8($0) }
            let written = try reply.withUnsafeBytes { bytes in try device.scatter(bytes, into: request) }
            #expect(written == 40)
            try device.complete(request, written: written)
            let used = try driver.requireUsed()
            var back = [UInt8](repeating: 0, count: 64)
            let copied = try back.withUnsafeMutableBytes { bytes in try driver.copyWrittenBytes(of: used, into: bytes) }
            #expect(Array(back[0..<copied]) == reply)
            try driver.free(used)
        }
    }

    @Test func aDroppedLongRequestGivesItsOverflowSegmentsBack() throws {
        let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
        let region = try HeapRegion(layout: layout)
        let notifiers = HeapNotifier.makePair()
        var driver = try DriverQueue(region: region, notifier: notifiers.driver, bufferSize: 64)
        var device = try DeviceQueue(region: region, notifier: notifiers.device, segmentCapacity: 8)
        let long = (0..<8).map { [UInt8($0)] }
        for _ in 0..<3 {
            try Self.submit(long, writable: 0, on: &driver)
            do {
                let request = try device.requireRequest()
                #expect(request.segmentCount == 8)
            }
            // Dropped: completed with 0 bytes, and all eight segments free again for the next.
            let used = try driver.requireUsed()
            #expect(used.writtenByteCount == 0)
            try driver.free(used)
        }
        #expect(device.takenCount == 0)
    }
}
