import Testing
import Virtqueue
import VirtqueueConformance

/// VIRTIO_F_IN_ORDER on the split ring only: the driver uses descriptors in ring order (an
/// indirect chain and a full ring included) and builds one chain at a time, and a resuming device
/// uses resubmitted requests in order. What the split and packed rings share is in
/// ``InOrderRunTests``.
@Suite("IN_ORDER on the split ring")
struct InOrderTests {
    @Test func featuresLetBothRingsRunInOrder() throws {
        try Features([.version1, .inOrder]).validateForRing()
        try Features([.version1, .inOrder, .ringPacked]).validateForRing()
        #expect(Features.implementedTransport.contains(.inOrder))
        #expect(!Features.all.contains(.inOrder))
        #expect(!Features.wireOnlyTransport.contains(.inOrder))
        #expect(Features.negotiate(offered: [.inOrder, .eventIndex], wanted: [.inOrder]) == [.inOrder, .version1])
    }

    /// The driver uses descriptors in ring order — from 0, wrapping after N − 1 — each chain's
    /// `next` fields `x + 1` (0 after N − 1), as virtio 1.2 §2.7.5 asks of an in-order driver.
    @Test func theDriverUsesDescriptorsInRingOrder() throws {
        var pair = try InOrderPair(.split)
        let size = InOrderPair.queueSize
        var expectedHead = 0
        for round in 0..<6 {
            let readable = round % 3  // chains of 1, 2 and 3 descriptors
            let id = try pair.submit(tag: UInt8(round), readable: readable)
            #expect(Int(id) == expectedHead, "round \(round)")
            // Every descriptor of the chain but the last has NEXT and next = x + 1 mod N.
            for index in 0..<readable {
                let descriptor = (expectedHead + index) % size
                let flags = pair.ring.load(UInt16.self, at: pair.ring.fields.descriptor(descriptor) + 12)
                let next = pair.ring.load(UInt16.self, at: pair.ring.fields.descriptor(descriptor) + 14)
                #expect(flags & RingWriter.next != 0)
                #expect(Int(next) == (descriptor + 1) % size, "round \(round), descriptor \(descriptor)")
            }
            expectedHead = (expectedHead + readable + 1) % size
            let request = try pair.device.requireRequest()
            try pair.device.complete(request, written: 16)
            let taken = try pair.takeAll()
            #expect(taken.map(\.id) == [id])
        }
        #expect(pair.driver.freeDescriptorCount == size)
    }

    /// Under IN_ORDER a chain is built alone: a second chain's first segment is refused while
    /// another is being built, and accepted once that one is submitted (or discarded).
    @Test func chainsAreBuiltOneAtATime() throws {
        var pair = try InOrderPair(.split)
        var first = pair.driver.makeChain()
        try pair.driver.appendReadable(to: &first, copying: [1])
        var second = pair.driver.makeChain()
        let error = #expect(throws: VirtqueueError.self) {
            try pair.driver.appendReadable(to: &second, copying: [2])
        }
        #expect(error?.code == .chainInProgress)
        #expect(error?.isPeerViolation == false)
        #expect(second.segmentCount == 0)
        try pair.driver.appendWritable(to: &first, capacity: 16)
        #expect(try pair.driver.submit(first) == 0)
        try pair.driver.appendReadable(to: &second, copying: [2])
        try pair.driver.discard(second)
        var third = pair.driver.makeChain()
        try pair.driver.appendReadable(to: &third, copying: [3])
        try pair.driver.appendReadable(to: &third, copying: [3])
        #expect(try pair.driver.submit(third) == 2, "a discarded chain's descriptors are the next ones again")
        #expect(pair.driver.freeDescriptorCount == InOrderPair.queueSize - 4)
        do {
            var dropped = pair.driver.makeChain()
            try pair.driver.appendReadable(to: &dropped, copying: [4])
        }
        #expect(try pair.submit(tag: 5) == 4, "a dropped chain's descriptors are the next ones again")
    }

    /// A chain that moves into an indirect table keeps one descriptor; the ones it gave back are
    /// the next in ring order.
    @Test func anIndirectChainKeepsRingOrder() throws {
        var pair = try InOrderPair(.split, bufferSize: 256, indirectThreshold: 4)
        var chain = pair.driver.makeChain()
        for byte in 0..<4 { try pair.driver.appendReadable(to: &chain, copying: [UInt8(byte)]) }
        #expect(chain.isIndirect == false)
        #expect(pair.driver.freeDescriptorCount == InOrderPair.queueSize - 4)
        for byte in 4..<7 { try pair.driver.appendReadable(to: &chain, copying: [UInt8(byte)]) }
        #expect(chain.isIndirect == true)
        #expect(try pair.driver.submit(chain) == 0)
        #expect(pair.driver.freeDescriptorCount == InOrderPair.queueSize - 1)
        #expect(try pair.submit(tag: 1, readable: 2) == 1)
        for _ in 0..<2 {
            let request = try pair.device.requireRequest()
            let room = request.writableByteCount
            try pair.device.complete(request, written: room)
        }
        #expect(try pair.takeAll().map(\.id) == [0, 1])
        #expect(try pair.submit(tag: 2) == 4)
        #expect(pair.driver.freeBufferCount == pair.driver.bufferCount - 2)
    }

    /// The ring fills: N one-descriptor chains, the next refused with `ringFull`, and the ring
    /// wraps after they come back, 3 rounds.
    @Test func aFullRingWrapsInOrder() throws {
        var pair = try InOrderPair(.split)
        let size = InOrderPair.queueSize
        for round in 0..<3 {
            var ids: [UInt16] = []
            for index in 0..<size {
                var chain = pair.driver.makeChain()
                try pair.driver.appendWritable(to: &chain, capacity: 8)
                ids.append(try pair.driver.submit(chain))
                _ = index
            }
            #expect(ids == (0..<size).map { UInt16($0) }, "round \(round)")
            var extra = pair.driver.makeChain()
            let error = #expect(throws: VirtqueueError.self) { try pair.driver.appendWritable(to: &extra) }
            #expect(error?.code == .ringFull)
            try pair.driver.discard(extra)
            var requests: [UInt16] = []
            while let request = try pair.device.nextRequest() {
                requests.append(request.id)
                try pair.device.complete(request, written: 8, publish: false)
            }
            try pair.device.notifyIfNeeded()
            #expect(requests == ids)
            #expect(pair.ring.usedElement(slot: 0).id == UInt32(size - 1), "one element for the whole ring")
            #expect(try pair.takeAll().map(\.id) == ids)
        }
    }
}

extension InOrderTests {
    /// A device resuming a ring whose previous device took two requests and died: the requests
    /// taken again get the positions the cursor counts in flight, in the order they are
    /// resubmitted, and are used in that order whatever order they complete in.
    @Test func resubmittedRequestsAreUsedInTheOrderResubmitted() throws {
        let layout = try RegionLayout(
            queueSizes: [InOrderPair.queueSize],
            dataAreaSize: 32 * 64,
            features: InOrderPair.features
        )
        let region = try GuardedRegion(layout: layout)
        let ring = RingWriter(region: region, layout: layout)
        let (driverNotifier, deviceNotifier) = CountingNotifier.makePair()
        var driver = try DriverQueue(region: region, notifier: driverNotifier, bufferSize: 64)
        var ids: [UInt16] = []
        for tag in 0..<3 {
            var chain = driver.makeChain()
            try driver.appendReadable(to: &chain, copying: [UInt8(tag)])
            try driver.appendWritable(to: &chain, capacity: 16)
            ids.append(try driver.submit(chain))
        }
        // The previous device took the first two; the new one resumes with both in flight.
        var placement = try layout.placement(ofQueue: 0)
        placement.cursor = QueueCursor(nextAvailable: 2, nextUsed: 0)
        var device = try DeviceQueue(
            memory: region,
            placement: placement,
            notifier: deviceNotifier,
            features: layout.features
        )
        let first = try device.resubmittedRequest(head: ids[0])
        let second = try device.resubmittedRequest(head: ids[1])
        let third = try device.requireRequest()
        #expect(third.id == ids[2])
        try device.complete(third, written: 3)
        try device.complete(second, written: 2)
        #expect(ring.usedIndex == 0)
        try device.complete(first, written: 1)
        #expect(ring.usedIndex == 3)
        var taken: [(UInt16, Int)] = []
        while let used = try driver.takeUsed() {
            taken.append((used.id, used.writtenByteCount))
            try driver.free(used)
        }
        #expect(taken.map(\.0) == ids)
        #expect(taken.map(\.1) == [1, 2, 3])
    }

    /// A device built with the default `supportedFeatures` (``Features/all``, without IN_ORDER)
    /// runs a ring that negotiated IN_ORDER: the ordering is the ring core's to keep.
    @Test func aDeviceWithTheDefaultSupportedFeaturesRunsInOrder() throws {
        let layout = try RegionLayout(
            queueSizes: [InOrderPair.queueSize],
            dataAreaSize: 32 * 64,
            features: InOrderPair.features
        )
        let region = try GuardedRegion(layout: layout)
        let device = try DeviceQueue(region: region, notifier: CountingNotifier())
        #expect(device.features.contains(.inOrder))
    }
}

/// The driver's in-order rules against a hostile used ring (``HostileInOrderDeviceRule``, also
/// run by the conformance suite on every backend).
@Suite("Driver side under IN_ORDER: a hostile device")
struct InOrderDriverTrustTests {
    /// Each rule in each of its ring formats.
    static let rules = HostileInOrderDeviceRule.allCases.flatMap { rule in
        [RingFormat.split, .packed].filter { rule.formats.contains($0) }.map { (rule, $0) }
    }

    @Test(arguments: rules)
    func hostileUsedRing(_ rule: HostileInOrderDeviceRule, format: RingFormat) throws {
        let layout = try RegionLayout(
            queueSizes: [HostileInOrderDeviceRule.queueSize],
            dataAreaSize: 8 * 256,
            features: HostileInOrderDeviceRule.features.union(format == .packed ? .ringPacked : [])
        )
        let region = try GuardedRegion(layout: layout)
        let ring = RingWriter(region: region, layout: layout)
        var driver = try DriverQueue(region: region, notifier: CountingNotifier(), bufferSize: 256)
        try rule.submitChains(to: &driver)
        rule.plant(ring)
        var taken = 0
        for expected in rule.goodTakes {
            let used = try driver.requireUsed()
            #expect(used.id == expected.id && used.writtenByteCount == expected.written, "\(rule)")
            try driver.free(used)
            taken += 1
        }
        do {
            _ = try driver.takeUsed()
            Issue.record("expected \(rule.code), but the driver accepted the used element")
        } catch {
            #expect(error.code == rule.code, "\(error)")
            #expect(error.isPeerViolation)
        }
        #expect(driver.isBroken == true)
        while let abandoned = driver.takeAbandoned() {
            #expect(abandoned.status == UsedChain.Status.abandoned(rule.code))
            try driver.free(abandoned)
            taken += 1
        }
        #expect(taken == HostileInOrderDeviceRule.chainCount)
        #expect(driver.inFlightCount == 0)
        #expect(driver.freeBufferCount == driver.bufferCount)
        #expect(driver.freeDescriptorCount == HostileInOrderDeviceRule.queueSize)
        #expect(region.guardsIntact, "bytes outside the region were modified")
    }

    /// A valid batch is taken back one chain at a time: the earlier chains used completely, the
    /// last with the element's length.
    @Test func aValidBatchIsTakenBackWhole() throws {
        let layout = try RegionLayout(
            queueSizes: [HostileInOrderDeviceRule.queueSize],
            dataAreaSize: 8 * 256,
            features: HostileInOrderDeviceRule.features
        )
        let region = try GuardedRegion(layout: layout)
        let ring = RingWriter(region: region, layout: layout)
        var driver = try DriverQueue(region: region, notifier: CountingNotifier(), bufferSize: 256)
        try HostileInOrderDeviceRule.usedOutOfOrder.submitChains(to: &driver)
        ring.usedElement(slot: 0, id: 1, length: 10)
        ring.usedElement(slot: 2, id: 3, length: 7)
        ring.usedIndex = 3
        var taken: [(UInt16, Int)] = []
        while let used = try driver.takeUsed() {
            taken.append((used.id, used.writtenByteCount))
            try driver.free(used)
        }
        #expect(taken.map(\.0) == [0, 1, 3])
        #expect(taken.map(\.1) == [0, 10, 7])
        #expect(driver.inFlightCount == 0)
        #expect(driver.freeDescriptorCount == HostileInOrderDeviceRule.queueSize)
    }
}
