import Testing
import Virtqueue
import VirtqueueConformance

/// VIRTIO_F_IN_ORDER on the packed ring only (virtio 1.2 §2.8.9): event suppression counts a
/// batch's skipped descriptors, a driver in the middle of a batch does not wait for the ring, a
/// side with nothing to take sleeps, and buffer IDs are ring indices over many laps. What the
/// split and packed rings share is in ``InOrderRunTests``.
@Suite("IN_ORDER on the packed ring")
struct PackedInOrderTests {
    @Test func featuresLetThePackedRingRunInOrder() throws {
        try Features([.version1, .inOrder, .ringPacked]).validateForRing()
        let pair = try InOrderPair(.packed)
        #expect(pair.driver.features.isSuperset(of: [.ringPacked, .inOrder]))
        #expect(pair.device.features.isSuperset(of: [.ringPacked, .inOrder]))
    }

    /// A buffer ID is the driver's again once its request is completed, even while the completion
    /// is held for an earlier one: a list the driver makes available again with that ID, of
    /// another length, does not change how far the held one moves the used position. (Found by
    /// `FuzzDevicePacked`: the held completion took the new list's descriptor count.)
    @Test func aHeldCompletionKeepsItsListLengthWhenItsIDIsReused() throws {
        var pair = try InOrderPair(.packed)
        let available: UInt16 = 0x0080 | PackedRingFields.writeFlag
        // Three one-descriptor lists, IDs 0, 1, 2, at positions 0, 1, 2.
        for index in 0..<3 {
            pair.ring.packedDescriptor(
                index,
                address: pair.ring.data(64 * index),
                length: 16,
                id: UInt16(index),
                flags: available
            )
        }
        let first = try pair.device.requireRequest()
        let second = try pair.device.requireRequest()
        let third = try pair.device.requireRequest()
        try pair.device.complete(third, written: 1)  // held: 0 and 1 come first
        // ID 2 again, a two-descriptor list at positions 3 and 4.
        pair.ring.packedDescriptor(4, address: pair.ring.data(256), length: 16, id: 2, flags: available)
        pair.ring.packedDescriptor(
            3,
            address: pair.ring.data(320),
            length: 16,
            id: 2,
            flags: available | PackedRingFields.nextFlag
        )
        let fourth = try pair.device.requireRequest()
        #expect(fourth.id == 2 && fourth.segmentCount == 2)
        try pair.device.complete(fourth, written: 2)  // held too
        try pair.device.complete(first, written: 3)
        try pair.device.complete(second, written: 4)
        // Partly written buffers, one used descriptor each, each at its own list's position.
        let used: UInt16 = 0x8080 | PackedRingFields.writeFlag
        let expected: [(position: Int, id: UInt16, length: UInt32)] = [(0, 0, 3), (1, 1, 4), (2, 2, 1), (3, 2, 2)]
        for entry in expected {
            let descriptor = pair.ring.packedDescriptor(entry.position)
            #expect(
                descriptor.id == entry.id && descriptor.length == entry.length && descriptor.flags == used,
                "position \(entry.position): \(descriptor)"
            )
        }
        #expect(pair.ring.packedDescriptor(4).flags == available, "the list's second descriptor is skipped")
    }

    /// Event suppression counts a batch's skipped descriptors as moves: a driver that asked to
    /// hear of the used position passing a descriptor inside the batch is notified.
    @Test(arguments: [(3, true), (5, true), (6, false), (7, false)])
    func eventSuppressionCountsSkippedDescriptors(event: Int, notified: Bool) throws {
        var pair = try InOrderPair(.packed)
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
        var pair = try InOrderPair(.packed, queueSize: 4)
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
        let features = inOrder ? InOrderPair.features : InOrderPair.features.subtracting(.inOrder)
        var pair = try InOrderPair(.packed, features: features)
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
}

extension PackedInOrderTests {
    /// Many laps at odd queue sizes: chains of one to three descriptors (some indirect), taken
    /// in batches, completed in a scrambled order with mixed staging and lengths; every chain
    /// comes back in order with the bytes the spec gives it — its own length if it ends a
    /// batch, its whole writable room if a batch skips it — and IDs are ring indices.
    @Test(arguments: [1, 3, 5, 8, 257])
    func scrambledCompletionsOverManyLaps(queueSize: Int) throws {
        var pair = try InOrderPair(.packed, queueSize: queueSize, bufferSize: 64, indirectThreshold: 3)
        var generator = SplitMix64(state: UInt64(queueSize))
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
