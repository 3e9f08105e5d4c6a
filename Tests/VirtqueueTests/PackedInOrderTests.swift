import Testing
import Virtqueue
import VirtqueueConformance

/// VIRTIO_F_IN_ORDER on the packed ring (virtio 1.2 §2.8.9), both sides, behind the usual calls:
/// the device uses buffers in the order made available (holding a completion that comes early),
/// reports a staged run of completely written buffers with one used descriptor — the run's last
/// buffer ID, at the run's first position — and skips its used position past the run's
/// descriptors; the driver, whose buffer IDs are the ring indices of its chains' first
/// descriptors, takes the batch back one chain at a time and skips the same way.
@Suite("IN_ORDER on the packed ring")
struct PackedInOrderTests {
    static let queueSize = 8
    static let features: Features = [.ringPacked, .inOrder, .indirectDescriptors, .eventIndex]
    /// A first descriptor of a chain of more than one, available with wrap counter 1.
    static let availableWithNext: UInt16 = 0x0081

    struct Pair: ~Copyable {
        var driver: DriverQueue<GuardedRegion, CountingNotifier>
        var device: DeviceQueue<GuardedRegion, CountingNotifier>
        let ring: RingWriter
        let region: GuardedRegion

        init(
            queueSize: Int = PackedInOrderTests.queueSize,
            features: Features = PackedInOrderTests.features,
            bufferSize: Int = 64,
            indirectThreshold: Int = 16
        ) throws {
            let layout = try RegionLayout(
                queueSizes: [queueSize],
                dataAreaSize: (6 * queueSize + 8) * bufferSize,
                features: features
            )
            let region = try GuardedRegion(layout: layout)
            let (driverNotifier, deviceNotifier) = CountingNotifier.makePair()
            let driver = try DriverQueue(
                region: region,
                notifier: driverNotifier,
                bufferSize: bufferSize,
                indirectThreshold: indirectThreshold
            )
            let device = try DeviceQueue(region: region, notifier: deviceNotifier)
            self.driver = driver
            self.device = device
            ring = RingWriter(region: region, layout: layout)
            self.region = region
        }

        /// Submits a chain of `readable` one-byte readable segments (the byte is `tag`) and one
        /// 16-byte writable segment.
        @discardableResult
        mutating func submit(tag: UInt8, readable: Int = 1, publish: Bool = true) throws -> UInt16 {
            var chain = driver.makeChain()
            for _ in 0..<readable { try driver.appendReadable(to: &chain, copying: [tag]) }
            try driver.appendWritable(to: &chain, capacity: 16)
            return try driver.submit(chain, publish: publish)
        }

        /// Takes every chain back: (id, written bytes, first written byte).
        mutating func takeAll() throws -> [(id: UInt16, written: Int, first: UInt8?)] {
            var taken: [(id: UInt16, written: Int, first: UInt8?)] = []
            while let used = try driver.takeUsed() {
                var first: UInt8?
                try driver.forEachSegment(of: used) { writable, bytes in
                    if writable, first == nil, let byte = bytes.first { first = byte }
                }
                taken.append((used.id, used.writtenByteCount, first))
                try driver.free(used)
            }
            return taken
        }

        /// Takes the next request, fills its writable room with `byte`, and completes it with
        /// `written` bytes.
        mutating func serve(byte: UInt8, written: Int, publish: Bool = true) throws {
            let request = try device.requireRequest()
            try device.forEachWritable(in: request) { bytes in
                for index in bytes.indices { bytes[index] = byte }
            }
            try device.complete(request, written: written, publish: publish)
        }
    }

    @Test func featuresLetThePackedRingRunInOrder() throws {
        try Features([.version1, .inOrder, .ringPacked]).validateForRing()
        let pair = try Pair()
        #expect(pair.driver.features.isSuperset(of: [.ringPacked, .inOrder]))
        #expect(pair.device.features.isSuperset(of: [.ringPacked, .inOrder]))
    }

    @Test func completionsInOrderComeBackInOrder() throws {
        var pair = try Pair()
        let ids = try (0..<3).map { try pair.submit(tag: UInt8($0)) }
        #expect(ids == [0, 2, 4], "buffer IDs are the ring indices of the chains' first descriptors")
        for index in 0..<3 { try pair.serve(byte: 0xA0 + UInt8(index), written: index + 1) }
        for (position, id) in zip([0, 2, 4], ids) {
            #expect(pair.ring.packedDescriptor(position).id == id)
            #expect(pair.ring.packedDescriptor(position).flags == 0x8082)
        }
        let taken = try pair.takeAll()
        #expect(taken.map(\.id) == ids)
        #expect(taken.map(\.written) == [1, 2, 3])
        #expect(taken.map(\.first) == [0xA0, 0xA1, 0xA2])
        #expect(pair.driver.freeDescriptorCount == Self.queueSize)
        #expect(pair.driver.freeBufferCount == pair.driver.bufferCount)
    }

    /// A completion that comes before the ones made available before it is held: the driver sees
    /// nothing until the first completes, then all of them, in the order made available.
    @Test func anEarlyCompletionIsHeldUntilTheOnesBeforeItComplete() throws {
        var pair = try Pair()
        let ids = try (0..<3).map { try pair.submit(tag: UInt8($0)) }
        let first = try pair.device.requireRequest()
        let second = try pair.device.requireRequest()
        let third = try pair.device.requireRequest()
        try pair.device.complete(third, written: 3)
        try pair.device.complete(second, written: 2)
        #expect(pair.ring.packedDescriptor(0).flags == Self.availableWithNext, "nothing was used yet")
        #expect(try pair.driver.takeUsed() == nil)
        #expect(pair.device.takenCount == 1)
        try pair.device.complete(first, written: 1)
        let taken = try pair.takeAll()
        #expect(taken.map(\.id) == ids)
        #expect(taken.map(\.written) == [1, 2, 3])
    }

    /// A staged run of buffers each written completely is reported with one used descriptor:
    /// the last buffer's ID and length, at the run's first position; the run's other
    /// descriptors keep what the driver wrote, and both sides skip past them.
    @Test func aStagedRunOfCompleteBuffersIsOneUsedDescriptor() throws {
        var pair = try Pair()
        let ids = try (0..<3).map { try pair.submit(tag: UInt8($0)) }
        for index in 0..<3 { try pair.serve(byte: UInt8(10 + index), written: index == 2 ? 5 : 16, publish: false) }
        #expect(pair.ring.packedDescriptor(0).flags == Self.availableWithNext, "the run is staged")
        pair.device.publish()
        let used = pair.ring.packedDescriptor(0)
        #expect(used.id == ids[2] && used.length == 5 && used.flags == 0x8082)
        for position in [2, 4] {
            #expect(pair.ring.packedDescriptor(position).flags == Self.availableWithNext, "position \(position)")
            #expect(pair.ring.packedDescriptor(position).id == UInt16(position), "position \(position)")
        }
        #expect(pair.device.cursor.usedPosition == PackedRingPosition(index: 6, wrapCounter: true))
        let taken = try pair.takeAll()
        #expect(taken.map(\.id) == ids)
        #expect(taken.map(\.written) == [16, 16, 5])
        #expect(taken.map(\.first) == [10, 11, 12])
        #expect(pair.driver.cursor.usedPosition == PackedRingPosition(index: 6, wrapCounter: true))
        #expect(pair.driver.freeDescriptorCount == Self.queueSize)
    }

    /// A buffer written in part ends the run: it keeps its own used descriptor, with its length;
    /// a run whose last buffer wrote nothing has no `WRITE`.
    @Test func aPartlyWrittenBufferEndsTheRun() throws {
        var pair = try Pair()
        let ids = try (0..<4).map { try pair.submit(tag: UInt8($0)) }
        #expect(ids == [0, 2, 4, 6])
        let written = [16, 3, 16, 0]
        for count in written { try pair.serve(byte: 1, written: count, publish: false) }
        try pair.device.notifyIfNeeded()
        #expect(pair.ring.packedDescriptor(0).id == ids[1] && pair.ring.packedDescriptor(0).length == 3)
        #expect(pair.ring.packedDescriptor(4).id == ids[3] && pair.ring.packedDescriptor(4).flags == 0x8080)
        let taken = try pair.takeAll()
        #expect(taken.map(\.id) == ids)
        #expect(taken.map(\.written) == written)
    }

    /// Held completions released by a staged one fold into its run.
    @Test func heldCompletionsReleasedByAStagedOneFoldIntoItsRun() throws {
        var pair = try Pair()
        let ids = try (0..<3).map { try pair.submit(tag: UInt8($0)) }
        let first = try pair.device.requireRequest()
        let second = try pair.device.requireRequest()
        let third = try pair.device.requireRequest()
        try pair.device.complete(second, written: 16)
        try pair.device.complete(third, written: 9)
        try pair.device.complete(first, written: 16, publish: false)
        #expect(pair.ring.packedDescriptor(0).flags == Self.availableWithNext)
        pair.device.publish()
        #expect(pair.ring.packedDescriptor(0).id == ids[2] && pair.ring.packedDescriptor(0).length == 9)
        #expect(try pair.takeAll().map(\.written) == [16, 16, 9])
    }

    /// A run that starts after an earlier staged run is folded into while the earlier run's
    /// `flags` are held: nothing of either is visible until the publication.
    @Test func aSecondRunFoldsBehindTheStagedFirst() throws {
        var pair = try Pair()
        let ids = try (0..<4).map { try pair.submit(tag: UInt8($0)) }
        for count in [16, 3, 16, 16] { try pair.serve(byte: 2, written: count, publish: false) }
        #expect(pair.ring.packedDescriptor(0).flags == Self.availableWithNext)
        #expect(try pair.driver.takeUsed() == nil)
        pair.device.publish()
        #expect(pair.ring.packedDescriptor(4).id == ids[3] && pair.ring.packedDescriptor(4).length == 16)
        #expect(try pair.takeAll().map(\.written) == [16, 3, 16, 16])
    }

    /// A request dropped instead of completed is completed with 0 bytes, in its turn; a written
    /// length out of range completes the request with 0 bytes and throws, in order.
    @Test func droppedAndOverlongCompletionsAreUsedInTheirTurn() throws {
        var pair = try Pair()
        let ids = try (0..<3).map { try pair.submit(tag: UInt8($0)) }
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
        try pair.serve(byte: 3, written: 4)
        #expect(pair.device.isBroken == false)
        let taken = try pair.takeAll()
        #expect(taken.map(\.id) == ids)
        #expect(taken.map(\.written) == [0, 0, 4])
    }

    /// Event suppression counts a batch's skipped descriptors as moves: a driver that asked to
    /// hear of the used position passing a descriptor inside the batch is notified.
    @Test(arguments: [(3, true), (5, true), (6, false), (7, false)])
    func eventSuppressionCountsSkippedDescriptors(event: Int, notified: Bool) throws {
        var pair = try Pair()
        for tag in 0..<3 { try pair.submit(tag: UInt8(tag)) }
        pair.ring.driverEventSuppression = .descriptor(PackedRingPosition(index: UInt16(event), wrapCounter: true))
        for _ in 0..<3 { try pair.serve(byte: 4, written: 16, publish: false) }
        #expect(try pair.device.notifyIfNeeded() == notified)
        #expect(try pair.takeAll().count == 3)
    }

    /// A driver taking a batch back does not wait for the ring: the batch's chains are there
    /// — even once a chain submitted after the first came back has overwritten the used
    /// descriptor at the batch's start (a full ring of one-descriptor chains).
    @Test func aWaitReturnsAtOnceWhileABatchIsBeingTakenBack() throws {
        var pair = try Pair(queueSize: 4)
        for _ in 0..<4 {
            var chain = pair.driver.makeChain()
            try pair.driver.appendWritable(to: &chain, capacity: 8)
            try pair.driver.submit(chain)
        }
        for _ in 0..<4 {
            let request = try pair.device.requireRequest()
            try pair.device.complete(request, written: 8, publish: false)
        }
        try pair.device.notifyIfNeeded()
        #expect(pair.ring.packedDescriptor(0).id == 3)
        let first = try pair.driver.requireUsed()
        #expect(first.id == 0)
        try pair.driver.free(first)
        var chain = pair.driver.makeChain()
        try pair.driver.appendWritable(to: &chain, capacity: 8)
        #expect(try pair.driver.submit(chain) == 0)
        #expect(pair.ring.packedDescriptor(0).flags & 0x8080 == 0x8000, "available for wrap counter 0")
        try pair.driver.waitForUsed(spins: 0)
        var ids: [UInt16] = []
        while let used = try pair.driver.takeUsed() {
            ids.append(used.id)
            try pair.driver.free(used)
        }
        #expect(ids == [1, 2, 3])
        #expect(pair.driver.inFlightCount == 1)
        #expect(pair.driver.isBroken == false)
    }

    /// A packed side that has taken what there was sleeps when it waits — with or without
    /// IN_ORDER — and only a driver in the middle of a batch returns without reading the ring.
    /// (The test notifier throws `notifierFailed` where a wait would block.)
    @Test(arguments: [false, true])
    func aSideWithNothingToTakeSleeps(inOrder: Bool) throws {
        let features = inOrder ? Self.features : Self.features.subtracting(.inOrder)
        var pair = try Pair(features: features)
        for round in 0..<3 {
            try pair.submit(tag: UInt8(round))
            try pair.serve(byte: 1, written: 16)
            #expect(try pair.takeAll().count == 1)
            // Staged: the device sees nothing new; the driver's wait publishes it, and has one
            // chain in flight that is not used yet.
            try pair.submit(tag: 9, publish: false)
            do {
                try pair.device.waitForRequests(spins: 0)
                Issue.record("round \(round): the device's wait returned with nothing made available")
            } catch {
                #expect(error.code == .notifierFailed, "\(error)")
            }
            do {
                try pair.driver.waitForUsed(spins: 0)
                Issue.record("round \(round): the driver's wait returned with nothing used")
            } catch {
                #expect(error.code == .notifierFailed, "\(error)")
            }
            #expect(try pair.takeAll().isEmpty)
            try pair.serve(byte: 2, written: 16)
            #expect(try pair.takeAll().count == 1)
        }
    }

    /// The device stops only once every request is completed (held ones included), and the
    /// cursor it reports is past the whole batch.
    @Test func stopWaitsForHeldCompletions() throws {
        var pair = try Pair()
        try pair.submit(tag: 1)
        try pair.submit(tag: 2)
        let first = try pair.device.requireRequest()
        let second = try pair.device.requireRequest()
        try pair.device.complete(second, written: 16)
        #expect(throws: VirtqueueError.self) { _ = try pair.device.stop() }
        try pair.device.complete(first, written: 16, publish: false)
        let cursor = try pair.device.stop()
        let position = PackedRingPosition(index: 4, wrapCounter: true)
        #expect(cursor == QueueCursor(available: position, used: position))
        #expect(try pair.takeAll().map(\.written) == [16, 16])
    }
}

extension PackedInOrderTests {
    /// Many laps at odd queue sizes: chains of one to three descriptors (some indirect), taken
    /// in batches, completed in a scrambled order with mixed staging and lengths; every chain
    /// comes back in order with the bytes the spec gives it — its own length if it ends a
    /// batch, its whole writable room if a batch skips it — and IDs are ring indices.
    @Test(arguments: [1, 3, 5, 8, 257])
    func scrambledCompletionsOverManyLaps(queueSize: Int) throws {
        var pair = try Pair(queueSize: queueSize, bufferSize: 64, indirectThreshold: 3)
        var generator = SplitMix(seed: UInt64(queueSize))
        var position = PackedRingPosition.start
        var tag: UInt8 = 0
        for _ in 0..<(queueSize < 8 ? 60 : 12) {
            // Submit chains while they fit.
            var submitted: [(id: UInt16, tag: UInt8)] = []
            while true {
                // 3 readable segments go indirect; a chain has at most N segments.
                let readable = min(Int(generator.next() % 4), queueSize - 1)
                let descriptors = readable == 3 ? 1 : readable + 1
                guard descriptors <= pair.driver.freeDescriptorCount, submitted.count < 40 else { break }
                let id = try pair.submit(tag: tag, readable: readable, publish: generator.next() % 3 != 0)
                #expect(id == position.index, "the buffer ID is the ring index of the chain's first descriptor")
                position = position.advanced(by: descriptors, size: queueSize)
                submitted.append((id, tag))
                tag &+= 1
            }
            pair.driver.publish()
            var requests: [Held] = []
            while let request = try pair.device.nextRequest() { requests.append(Held(request)) }
            #expect(requests.map(\.id) == submitted.map(\.id))
            // Complete in a scrambled order, each fully or in part.
            var expected: [UInt16: Int] = [:]
            var order = Array(requests.indices)
            for index in order.indices.reversed() {
                order.swapAt(index, Int(generator.next() % UInt64(index + 1)))
            }
            for index in order {
                guard let request = requests[index].request.take() else {
                    Issue.record("request \(index) was completed twice")
                    continue
                }
                let byte = UInt8(truncatingIfNeeded: request.id)
                try pair.device.forEachWritable(in: request) { bytes in
                    for offset in bytes.indices { bytes[offset] = byte }
                }
                let written = generator.next() % 2 == 0 ? 16 : Int(generator.next() % 16)
                expected[request.id] = written
                try pair.device.complete(request, written: written, publish: generator.next() % 2 == 0)
            }
            try pair.device.notifyIfNeeded()
            let taken = try pair.takeAll()
            #expect(taken.map(\.id) == submitted.map(\.id))
            for (index, chain) in taken.enumerated() {
                // A chain a batch skipped counts as used completely: 16 bytes, where the device
                // wrote 16 too (a partly written one ends its batch).
                #expect(chain.written == expected[chain.id], "chain \(chain.id)")
                #expect(chain.id == submitted[index].id)
                if chain.written > 0 {
                    #expect(chain.first == UInt8(truncatingIfNeeded: chain.id), "chain \(chain.id)")
                }
            }
        }
        #expect(pair.driver.cursor.usedPosition == position)
        #expect(pair.device.cursor.usedPosition == position)
        #expect(pair.driver.inFlightCount == 0)
        #expect(pair.driver.freeDescriptorCount == queueSize)
        #expect(pair.driver.freeBufferCount == pair.driver.bufferCount)
        #expect(pair.region.guardsIntact)
    }
}

/// A request held for a later completion.
final class Held {
    var request: DeviceRequest?
    let id: UInt16
    init(_ request: consuming DeviceRequest) {
        id = request.id
        self.request = .some(request)
    }
}

/// A small deterministic generator for the scrambled orders.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
