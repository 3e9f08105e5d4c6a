import Testing
import Virtqueue
import VirtqueueConformance

/// Every driver-side rule of the trust model: a hostile device plants a bad used ring; the
/// driver reports the typed error, the queue is broken, nothing outside the region is touched,
/// and the driver still accounts for every buffer it owns.
@Suite("Driver side: a hostile device")
struct DriverTrustTests {
    static var queueSize: Int { HostileDeviceRule.queueSize }

    /// Submits two chains — head 0 (one readable segment) and head 1 (a readable and a 64-byte
    /// writable segment) — then lets `plant` write the hostile used ring, takes `goodTakesBefore`
    /// chains back (calling `afterFirstTake` after the first), and checks the reaction.
    func expectViolation(
        _ code: VirtqueueError.Code,
        features: Features = .all,
        goodTakesBefore: Int = 0,
        plant: (RingWriter) -> Void,
        afterFirstTake: (RingWriter) -> Void = { _ in }
    ) throws {
        let layout = try RegionLayout(queueSizes: [Self.queueSize], dataAreaSize: 8 * 256, features: features)
        let region = try GuardedRegion(layout: layout)
        let ring = RingWriter(region: region, layout: layout)
        var driver = try DriverQueue(region: region, notifier: CountingNotifier(), bufferSize: 256)
        var first = driver.makeChain()
        try driver.appendReadable(to: &first, copying: [1, 2, 3])
        #expect(try driver.submit(first) == 0)
        var second = driver.makeChain()
        try driver.appendReadable(to: &second, copying: [4, 5, 6])
        try driver.appendWritable(to: &second, capacity: 64)
        #expect(try driver.submit(second) == 1)
        #expect(driver.inFlightCount == 2)

        plant(ring)
        var taken = 0
        for _ in 0..<goodTakesBefore {
            let used = try driver.requireUsed()
            try driver.free(used)
            taken += 1
            if taken == 1 { afterFirstTake(ring) }
        }
        do {
            _ = try driver.takeUsed()
            Issue.record("expected \(code), but the driver accepted the used element")
        } catch {
            #expect(error.code == code, "\(error)")
            #expect(error.isPeerViolation)
        }
        #expect(driver.isBroken == true)
        do {
            _ = try driver.takeUsed()
            Issue.record("a broken queue returned a used chain")
        } catch {
            #expect(error.code == .queueBroken)
        }
        var chain = driver.makeChain()
        #expect(throws: VirtqueueError.self) { try driver.appendWritable(to: &chain) }
        try driver.discard(chain)

        // Every chain still in flight comes back, abandoned, and every buffer returns to the pool.
        while let abandoned = driver.takeAbandoned() {
            #expect(abandoned.status == UsedChain.Status.abandoned(code))
            #expect(abandoned.writtenByteCount == 0)
            try driver.free(abandoned)
            taken += 1
        }
        #expect(taken == 2)
        #expect(driver.inFlightCount == 0)
        #expect(driver.freeBufferCount == driver.bufferCount)
        #expect(driver.freeDescriptorCount == Self.queueSize)
        #expect(region.guardsIntact, "bytes outside the region were modified")
    }

    /// Every rule of the one hostile-used-ring table (``HostileDeviceRule``, also run by the
    /// conformance suite on every backend), here on a region with guard bytes around it: the
    /// split ring's rules, then the packed ring's.
    /// Each rule holds with and without IN_ORDER.
    @Test(arguments: HostileDeviceRule.cases(for: .split), [false, true])
    func hostileUsedRing(_ rule: HostileDeviceRule, inOrder: Bool) throws {
        let features = inOrder ? Features.all.union(.inOrder) : .all
        try expectViolation(rule.code, features: features, goodTakesBefore: rule.goodTakesBefore) { ring in
            rule.plant(ring)
        }
    }

    @Test(arguments: HostileDeviceRule.cases(for: .packed), [false, true])
    func hostilePackedUsedDescriptor(_ rule: HostileDeviceRule, inOrder: Bool) throws {
        let features = Features.all.union(inOrder ? [.ringPacked, .inOrder] : .ringPacked)
        try expectViolation(rule.code, features: features, goodTakesBefore: rule.goodTakesBefore) { ring in
            rule.plant(ring)
        }
    }

    /// The driver reads `used.idx` once per batch: it takes the elements up to the index it
    /// validated without reading it again, and catches a rewrite at the next read.
    @Test func usedIndexRewrittenAfterValidation() throws {
        try expectViolation(
            .usedIndexJump,
            goodTakesBefore: 2,
            plant: { ring in
                ring.usedElement(slot: 0, id: 0, length: 0)
                ring.usedElement(slot: 1, id: 1, length: 0)
                ring.usedIndex = 2
            },
            afterFirstTake: { ring in ring.usedIndex = UInt16.max }
        )
    }

    @Test func validUsedElementIsAccepted() throws {
        let layout = try RegionLayout(queueSizes: [Self.queueSize], dataAreaSize: 8 * 256, features: .all)
        let region = try GuardedRegion(layout: layout)
        let ring = RingWriter(region: region, layout: layout)
        var driver = try DriverQueue(region: region, notifier: CountingNotifier(), bufferSize: 256)
        var chain = driver.makeChain()
        try driver.appendReadable(to: &chain, copying: [9])
        try driver.appendWritable(to: &chain, capacity: 64)
        let id = try driver.submit(chain)
        ring.usedElement(slot: 0, id: UInt32(id), length: 64)
        ring.usedIndex = 1
        let used = try driver.requireUsed()
        #expect(used.id == id)
        #expect(used.status == UsedChain.Status.completed)
        #expect(used.writtenByteCount == 64)
        try driver.free(used)
        #expect(driver.freeBufferCount == driver.bufferCount)
        let none = try driver.takeUsed() == nil
        #expect(none)
    }
}
