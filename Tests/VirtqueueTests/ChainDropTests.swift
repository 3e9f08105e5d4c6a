import Testing
import Virtqueue
import VirtqueueHeap

/// No caller error leaks a buffer: a chain dropped without `submit` or `discard` — because an
/// append threw, or the caller's own code threw between appends — gives its descriptors and pool
/// buffers back to its queue.
@Suite("Dropped chains give their buffers back")
struct ChainDropTests {
    struct CallerError: Error {}

    static let size = 8
    static let buffers = 8

    static func makeDriver() throws -> DriverQueue<HeapRegion, HeapNotifier> {
        let layout = try RegionLayout(queueSizes: [size], dataAreaSize: buffers * 64, features: .all)
        return try DriverQueue(
            region: try HeapRegion(layout: layout),
            notifier: HeapNotifier.makePair().driver,
            bufferSize: 64
        )
    }

    /// Builds a chain of `segments` segments the way the README does, throwing the caller's own
    /// error after `throwAfter` appends (or never).
    static func send(
        _ driver: inout DriverQueue<HeapRegion, HeapNotifier>,
        segments: Int,
        throwAfter: Int?
    ) throws {
        var chain = driver.makeChain()
        for index in 0..<segments {
            if throwAfter == index { throw CallerError() }
            if index < segments - 1 {
                try driver.appendReadable(to: &chain, copying: [UInt8(index)])
            } else {
                try driver.appendWritable(to: &chain, capacity: 16)
            }
        }
        if throwAfter == segments { throw CallerError() }
        try driver.submit(chain)
    }

    @Test(arguments: 0...4)
    func theCallersOwnErrorAtEveryAppendPositionLeaksNothing(throwAfter: Int) throws {
        var driver = try Self.makeDriver()
        for _ in 0..<3 {
            #expect(throws: CallerError.self) { try Self.send(&driver, segments: 4, throwAfter: throwAfter) }
        }
        let (descriptors, buffers, inFlight) = (
            driver.freeDescriptorCount, driver.freeBufferCount, driver.inFlightCount
        )
        #expect(descriptors == Self.size)
        #expect(buffers == Self.buffers)
        #expect(inFlight == 0)
    }

    @Test func anAppendThatThrowsLeaksNothing() throws {
        var driver = try Self.makeDriver()
        // Nine segments from a pool of eight: an append throws (the pool or the ring runs out)
        // and the half-built chain is dropped.
        let error = try #require(throws: VirtqueueError.self) {
            try Self.send(&driver, segments: 9, throwAfter: nil)
        }
        #expect(error.code == .poolExhausted || error.code == .ringFull || error.code == .chainTooLong)
        let (afterDescriptors, afterBuffers) = (driver.freeDescriptorCount, driver.freeBufferCount)
        #expect(afterDescriptors == Self.size)
        #expect(afterBuffers == Self.buffers)
        // Three failed sends in a row (the issue's report: 8/8 became 5/5 for good).
        for _ in 0..<3 {
            #expect(throws: VirtqueueError.self) {
                var chain = driver.makeChain()
                try driver.appendReadable(to: &chain, copying: [1])
                try driver.appendReadable(to: &chain, count: 100) { _ in }  // payloadTooLarge
                try driver.submit(chain)
            }
        }
        let (descriptors, buffers) = (driver.freeDescriptorCount, driver.freeBufferCount)
        #expect(descriptors == Self.size)
        #expect(buffers == Self.buffers)
    }

    @Test func anIndirectChainDroppedGivesItsTableBack() throws {
        let layout = try RegionLayout(queueSizes: [4], dataAreaSize: 16 * 64, features: .all)
        var driver = try DriverQueue(
            region: try HeapRegion(layout: layout),
            notifier: HeapNotifier.makePair().driver,
            bufferSize: 64,
            indirectThreshold: 2
        )
        do {
            var chain = driver.makeChain()
            for _ in 0..<3 { try driver.appendReadable(to: &chain, copying: [7]) }
            let indirect = chain.isIndirect
            #expect(indirect)
        }
        let (descriptors, buffers) = (driver.freeDescriptorCount, driver.freeBufferCount)
        #expect(descriptors == 4)
        #expect(buffers == 16)
    }

    @Test func anotherQueuesChainGoesBackToItsOwnQueue() throws {
        var first = try Self.makeDriver()
        var second = try Self.makeDriver()
        var chain = first.makeChain()
        try first.appendReadable(to: &chain, copying: [1, 2, 3])
        var caught: VirtqueueError?
        do {
            try second.submit(chain)
        } catch {
            caught = error
        }
        #expect(caught?.code == .notOwned)
        let (firstFree, secondFree) = (first.freeBufferCount, second.freeBufferCount)
        #expect(firstFree == Self.buffers)
        #expect(secondFree == Self.buffers)
    }

    @Test func aUsedChainDroppedInsteadOfFreedGivesItsBuffersBack() throws {
        var driver = try Self.makeDriver()
        for _ in 0..<2 { try Self.send(&driver, segments: 3, throwAfter: nil) }
        #expect(driver.inFlightCount == 2)
        driver.markBroken(VirtqueueError(.peerDied, "the device went away"))
        // The caller takes each abandoned chain back and throws while reading it: nothing frees it.
        func read(_ used: consuming UsedChain) throws {
            _ = used.id
            throw CallerError()
        }
        var thrown = 0
        while let used = driver.takeAbandoned() {
            do { try read(used) } catch { thrown += 1 }
        }
        #expect(thrown == 2)
        let (buffers, inFlight) = (driver.freeBufferCount, driver.inFlightCount)
        #expect(buffers == Self.buffers)
        #expect(inFlight == 0)
    }

    @Test func aRequestDroppedInsteadOfCompletedComesBackEmpty() throws {
        let layout = try RegionLayout(queueSizes: [Self.size], dataAreaSize: Self.buffers * 64, features: .all)
        let region = try HeapRegion(layout: layout)
        let (driverEnd, deviceEnd) = HeapNotifier.makePair()
        var driver = try DriverQueue(region: region, notifier: driverEnd, bufferSize: 64)
        var device = try DeviceQueue(region: region, notifier: deviceEnd)
        try Self.send(&driver, segments: 2, throwAfter: nil)
        // The device's code throws with the request in hand: nothing completes it.
        func handle(_ request: consuming DeviceRequest) throws {
            _ = request.id
            throw CallerError()
        }
        guard let request = try device.nextRequest() else {
            Issue.record("no request")
            return
        }
        var thrown = false
        do { try handle(request) } catch { thrown = true }
        #expect(thrown)
        #expect(device.takenCount == 0)
        guard let used = try driver.takeUsed() else {
            Issue.record("the dropped request did not come back")
            return
        }
        #expect(used.writtenByteCount == 0)
        try driver.free(used)
        let (buffers, inFlight) = (driver.freeBufferCount, driver.inFlightCount)
        #expect(buffers == Self.buffers)
        #expect(inFlight == 0)
        _ = try device.stop()
    }

    @Test func aChainThatOutlivesItsQueueIsHarmless() throws {
        var chain: Chain
        do {
            var driver = try Self.makeDriver()
            chain = driver.makeChain()
            try driver.appendReadable(to: &chain, copying: [1, 2, 3])
        }
        // The queue is gone; the chain still reads its own fields and ends without touching it.
        let segments = chain.segmentCount
        #expect(segments == 1)
        _ = consume chain
    }

    /// The driver's state outlives its queue while a token holds buffers, counted by the buffers
    /// themselves (the tokens keep no count): each token below reads its fields after the queue
    /// has gone, with a chain still in flight (whose buffers nothing gives back) and a chain with
    /// no segment (which touches nothing), and the last one dropped frees the state. Under
    /// AddressSanitizer a token that touched freed memory fails this test.
    @Test func tokensThatOutliveTheirQueueReadTheirOwnState() throws {
        let layout = try RegionLayout(queueSizes: [Self.size], dataAreaSize: Self.buffers * 64, features: .all)
        let region = try HeapRegion(layout: layout)
        let (driverEnd, deviceEnd) = HeapNotifier.makePair()
        var empty: Chain
        var building: Chain
        var used: UsedChain
        do {
            var driver = try DriverQueue(region: region, notifier: driverEnd, bufferSize: 64)
            var device = try DeviceQueue(region: region, notifier: deviceEnd)
            try Self.send(&driver, segments: 3, throwAfter: nil)
            try Self.send(&driver, segments: 2, throwAfter: nil)
            guard let request = try device.nextRequest() else {
                Issue.record("no request")
                return
            }
            try device.complete(request, written: 4)
            guard let taken = try driver.takeUsed() else {
                Issue.record("no used chain")
                return
            }
            used = taken
            empty = driver.makeChain()
            building = driver.makeChain()
            try driver.appendReadable(to: &building, copying: [7, 8])
            try driver.appendReadable(to: &building, copying: [9])
            // The second chain stays in flight: the queue goes with it.
            let (inFlight, free) = (driver.inFlightCount, driver.freeBufferCount)
            #expect(inFlight == 1)
            #expect(free == Self.buffers - 7)
        }
        let (segments, readable) = (building.segmentCount, building.readableByteCount)
        let emptySegments = empty.segmentCount
        #expect(segments == 2)
        #expect(readable == 3)
        #expect(emptySegments == 0)
        #expect(used.writtenByteCount == 4)
        _ = consume building
        _ = consume empty
        _ = consume used
    }
}
