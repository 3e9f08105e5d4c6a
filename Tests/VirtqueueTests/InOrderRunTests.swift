import Testing
import Virtqueue
import VirtqueueConformance

/// VIRTIO_F_IN_ORDER behaviour the split and packed rings share (one per-side state machine):
/// the device uses buffers in the order they were made available (holding a completion that
/// comes early) and reports a staged run of completely written buffers with one used entry — the
/// run's last buffer, at the run's first place (split: used-ring slot, `used.idx` moved by the
/// run's length; packed: the run's first descriptor position, both sides skipping the run's
/// descriptors); the driver takes the batch back one chain at a time.
@Suite("IN_ORDER on either ring format")
struct InOrderRunTests {
    static let formats: [RingFormat] = [.split, .packed]

    @Test(arguments: formats)
    func completionsInOrderComeBackInOrder(_ format: RingFormat) throws {
        var pair = try InOrderPair(format)
        let ids = try pair.submit(3)
        #expect(ids == [0, 2, 4], "buffer IDs are the ring indices of the chains' first descriptors")
        for index in 0..<3 { try pair.serve(byte: 0xA0 + UInt8(index), written: index + 1) }
        #expect(pair.usedCount == 3)
        for (k, id) in ids.enumerated() {
            #expect(pair.usedEntry(k) == (UInt32(id), UInt32(k + 1)), "entry \(k)")
            if format == .packed { #expect(pair.ring.packedDescriptor(Int(id)).flags == 0x8082, "entry \(k)") }
        }
        let taken = try pair.takeAll()
        #expect(taken.map(\.id) == ids)
        #expect(taken.map(\.written) == [1, 2, 3])
        #expect(taken.map(\.first) == [0xA0, 0xA1, 0xA2])
        #expect(pair.driver.freeDescriptorCount == InOrderPair.queueSize)
        #expect(pair.driver.freeBufferCount == pair.driver.bufferCount)
    }

    /// A completion that comes before the ones made available before it is held: the driver sees
    /// nothing until the first completes, then all of them, in the order made available.
    @Test(arguments: formats)
    func anEarlyCompletionIsHeldUntilTheOnesBeforeItComplete(_ format: RingFormat) throws {
        var pair = try InOrderPair(format)
        let ids = try pair.submit(3)
        let requests = try pair.takeRequests(3)
        for index in [2, 1] { try pair.complete(requests[index], byte: UInt8(index + 1), written: index + 1) }
        #expect(pair.usedCount == 0)
        #expect(pair.unpublishedPlaces == [0, 1, 2], "nothing was used yet")
        #expect(try pair.driver.takeUsed() == nil)
        #expect(pair.device.takenCount == 1)
        try pair.complete(requests[0], byte: 1, written: 1)
        #expect(pair.usedCount == 3)
        let taken = try pair.takeAll()
        #expect(taken.map(\.id) == ids)
        #expect(taken.map(\.written) == [1, 2, 3])
        #expect(taken.map(\.first) == [1, 2, 3])
    }

    /// A staged run of buffers each written completely is reported with one used entry: the last
    /// buffer's ID and length, at the run's first place; the run's other places keep what was
    /// there, and both sides skip past them.
    @Test(arguments: formats)
    func aStagedRunOfCompleteBuffersIsOneUsedEntry(_ format: RingFormat) throws {
        var pair = try InOrderPair(format)
        let ids = try pair.submit(3)
        for k in 1..<3 { pair.plantMarker(k) }
        for index in 0..<3 { try pair.serve(byte: UInt8(10 + index), written: index == 2 ? 5 : 16, publish: false) }
        #expect(pair.usedCount == 0, "the run is staged")
        #expect(pair.unpublishedPlaces == [0, 1, 2], "the run is staged")
        pair.device.publish()
        #expect(pair.usedCount == 3)
        #expect(pair.usedEntry(0) == (UInt32(ids[2]), 5))
        #expect(pair.untouchedPlaces == [1, 2], "a folded buffer's place was written")
        let sixth = PackedRingPosition(index: 6, wrapCounter: true)
        if format == .packed {
            #expect(pair.ring.packedDescriptor(0).flags == 0x8082)
            #expect(pair.device.cursor.usedPosition == sixth)
        }
        let taken = try pair.takeAll()
        #expect(taken.map(\.id) == ids)
        #expect(taken.map(\.written) == [16, 16, 5])
        #expect(taken.map(\.first) == [10, 11, 12])
        if format == .packed { #expect(pair.driver.cursor.usedPosition == sixth) }
        #expect(pair.driver.freeDescriptorCount == InOrderPair.queueSize)
    }

    /// A buffer written in part ends the run: it keeps its own used entry, with its length; on
    /// the packed ring, a run whose last buffer wrote nothing has no `WRITE`.
    @Test(arguments: formats, [7, 0])
    func aPartlyWrittenBufferEndsTheRun(_ format: RingFormat, lastWritten: Int) throws {
        var pair = try InOrderPair(format)
        let ids = try pair.submit(4)
        #expect(ids == [0, 2, 4, 6])
        let written = [16, 3, 16, lastWritten]
        for count in written { try pair.serve(byte: 1, written: count, publish: false) }
        try pair.device.notifyIfNeeded()
        #expect(pair.usedCount == 4)
        // Run 1: buffers 0 and 1 (1 written in part ends it); run 2: buffers 2 and 3.
        #expect(pair.usedEntry(0) == (UInt32(ids[1]), 3))
        #expect(pair.usedEntry(2).id == UInt32(ids[3]))
        if format == .split || lastWritten > 0 { #expect(pair.usedEntry(2).length == UInt32(lastWritten)) }
        if format == .packed {
            #expect(pair.ring.packedDescriptor(4).flags == (lastWritten == 0 ? 0x8080 : 0x8082))
        }
        let taken = try pair.takeAll()
        #expect(taken.map(\.id) == ids)
        #expect(taken.map(\.written) == written)
    }

    /// Held completions released by a later one use the staging choice of the call that releases
    /// them, and fold into one entry when written completely.
    @Test(arguments: formats)
    func heldCompletionsReleasedByAStagedOneFoldIntoItsRun(_ format: RingFormat) throws {
        var pair = try InOrderPair(format)
        let ids = try pair.submit(3)
        let requests = try pair.takeRequests(3)
        try pair.complete(requests[1], written: 16)
        try pair.complete(requests[2], written: 9)
        try pair.complete(requests[0], written: 16, publish: false)
        #expect(pair.usedCount == 0)
        #expect(pair.unpublishedPlaces == [0, 1, 2])
        pair.device.publish()
        #expect(pair.usedCount == 3)
        #expect(pair.usedEntry(0) == (UInt32(ids[2]), 9))
        #expect(try pair.takeAll().map(\.written) == [16, 16, 9])
    }

    /// A run that starts after an earlier staged run is folded into while the earlier run is
    /// held: nothing of either is visible until the publication.
    @Test(arguments: formats)
    func aSecondRunFoldsBehindTheStagedFirst(_ format: RingFormat) throws {
        var pair = try InOrderPair(format)
        let ids = try pair.submit(4)
        for count in [16, 3, 16, 16] { try pair.serve(byte: 2, written: count, publish: false) }
        #expect(pair.usedCount == 0)
        // Packed: the second run's used descriptor may be whole already; the driver cannot reach
        // it past the first run's held flags.
        #expect(pair.unpublishedPlaces.contains(0))
        #expect(try pair.driver.takeUsed() == nil)
        pair.device.publish()
        #expect(pair.usedCount == 4)
        #expect(pair.usedEntry(2) == (UInt32(ids[3]), 16))
        #expect(try pair.takeAll().map(\.written) == [16, 3, 16, 16])
    }

    /// A request dropped instead of completed is completed with 0 bytes, in its turn; a written
    /// length out of range completes the request with 0 bytes and throws, in order.
    @Test(arguments: formats)
    func droppedAndOverlongCompletionsAreUsedInTheirTurn(_ format: RingFormat) throws {
        var pair = try InOrderPair(format)
        let ids = try pair.submit(3)
        do {
            _ = try pair.device.requireRequest()
        }
        let second = try pair.device.requireRequest()
        do {
            try pair.device.complete(second, written: 17)
            Issue.record("a written length of 17 for 16 bytes of room was accepted")
        } catch {
            #expect(error.code == .writtenLengthTooLarge)
        }
        #expect(pair.usedCount == 2)
        try pair.serve(byte: 3, written: 4)
        #expect(pair.usedCount == 3)
        #expect(pair.device.isBroken == false)
        let taken = try pair.takeAll()
        #expect(taken.map(\.id) == ids)
        #expect(taken.map(\.written) == [0, 0, 4])
    }

    /// The device stops only once every request is completed (held ones included, published or
    /// staged), and the cursor it reports is past the whole batch.
    @Test(arguments: formats, [false, true])
    func stopWaitsForHeldCompletions(_ format: RingFormat, staged: Bool) throws {
        var pair = try InOrderPair(format)
        _ = try pair.submit(2)
        let requests = try pair.takeRequests(2)
        // Staged: both written completely, the first's completion staged (a fold to publish).
        let written = staged ? [16, 16] : [1, 2]
        try pair.complete(requests[1], written: written[1])
        #expect(throws: VirtqueueError.self) { _ = try pair.device.stop() }
        try pair.complete(requests[0], written: written[0], publish: !staged)
        let cursor = try pair.device.stop()
        let position = PackedRingPosition(index: 4, wrapCounter: true)
        let expected =
            format == .split
            ? QueueCursor(nextAvailable: 2, nextUsed: 2) : QueueCursor(available: position, used: position)
        #expect(cursor == expected)
        #expect(try pair.takeAll().map(\.written) == written)
    }
}
