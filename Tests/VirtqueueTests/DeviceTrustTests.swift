import Testing
import Virtqueue
import VirtqueueConformance

/// Every device-side rule of the trust model (docs/trust-model.md): a hostile driver plants a
/// bad value in ring memory; the device reports the typed error, the queue is broken, nothing
/// outside the region is touched, and the process does not trap.
@Suite("Device side: a hostile driver")
struct DeviceTrustTests {
    static let queueSize = 8

    /// Builds a region, attaches a device, lets `plant` write the hostile ring, takes
    /// `requestsBefore` good requests (calling `afterFirstRequest` after the first), then checks
    /// the device's reaction.
    func expectViolation(
        _ code: VirtqueueError.Code,
        features: Features = .all,
        requestsBefore: Int = 0,
        plant: (RingWriter) -> Void,
        afterFirstRequest: (RingWriter) -> Void = { _ in }
    ) throws {
        let layout = try RegionLayout(queueSizes: [Self.queueSize], dataAreaSize: 4096, features: features)
        let region = try GuardedRegion(layout: layout)
        let writer = RingWriter(region: region, layout: layout)
        var device = try DeviceQueue(region: region, notifier: CountingNotifier(), supportedFeatures: features)
        plant(writer)
        for taken in 0..<requestsBefore {
            let request = try device.requireRequest()
            #expect(request.segmentCount > 0)
            _ = consume request
            if taken == 0 { afterFirstRequest(writer) }
        }
        do {
            _ = try device.nextRequest()
            Issue.record("expected \(code), but the device accepted the chain")
        } catch {
            #expect(error.code == code, "\(error)")
            #expect(error.isPeerViolation)
        }
        #expect(device.isBroken == true)
        #expect(device.brokenReason?.code == code)
        do {
            _ = try device.nextRequest()
            Issue.record("a broken queue handed out a request")
        } catch {
            #expect(error.code == .queueBroken)
            #expect(error.cause == code)
        }
        #expect(region.guardsIntact, "bytes outside the region were modified")
    }

    @Test func availableIndexJumpBeyondQueueSize() throws {
        try expectViolation(.availableIndexJump) { ring in
            ring.descriptor(0, address: ring.data(0), length: 16)
            ring.availableIndex = UInt16(Self.queueSize + 1)
        }
    }

    /// The device reads `avail.idx` once per batch, as vhost does: it takes the entries up to
    /// the index it validated without reading it again, and catches a rewrite at the next read.
    @Test func availableIndexRewrittenAfterValidation() throws {
        try expectViolation(
            .availableIndexJump,
            requestsBefore: 2,
            plant: { ring in
                ring.descriptor(0, address: ring.data(0), length: 16)
                ring.descriptor(1, address: ring.data(16), length: 16)
                ring.makeAvailable(head: 0, slot: 0)
                ring.makeAvailable(head: 1, slot: 1)
                ring.availableIndex = 2
            },
            afterFirstRequest: { ring in ring.availableIndex = UInt16.max }
        )
    }

    @Test func headOutOfRange() throws {
        try expectViolation(.headOutOfRange) { ring in
            ring.makeAvailable(head: UInt16(Self.queueSize), slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func nextOutOfRange() throws {
        try expectViolation(.nextOutOfRange) { ring in
            ring.descriptor(0, address: ring.data(0), length: 16, flags: 1, next: UInt16(Self.queueSize))
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func descriptorLoop() throws {
        try expectViolation(.descriptorLoop) { ring in
            ring.descriptor(0, address: ring.data(0), length: 16, flags: 1, next: 1)
            ring.descriptor(1, address: ring.data(16), length: 16, flags: 1, next: 0)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func selfLoop() throws {
        try expectViolation(.descriptorLoop) { ring in
            ring.descriptor(3, address: ring.data(0), length: 16, flags: 1, next: 3)
            ring.makeAvailable(head: 3, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func chainLongerThanQueueSizeThroughIndirectTable() throws {
        try expectViolation(.peerChainTooLong) { ring in
            let count = Self.queueSize + 1
            for entry in 0..<count {
                let last = entry == count - 1
                ring.descriptor(
                    at: Int(ring.data(1024)) + 16 * entry,
                    address: ring.data(16 * entry),
                    length: 16,
                    flags: last ? 0 : 1,
                    next: last ? 0 : UInt16(entry + 1)
                )
            }
            ring.descriptor(0, address: ring.data(1024), length: UInt32(16 * count), flags: 4)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func chainLongerThanQueueSizeMixingDirectAndIndirect() throws {
        try expectViolation(.peerChainTooLong) { ring in
            for index in 0..<4 {
                ring.descriptor(index, address: ring.data(16 * index), length: 16, flags: 1, next: UInt16(index + 1))
            }
            let tableCount = Self.queueSize - 3
            for entry in 0..<tableCount {
                let last = entry == tableCount - 1
                ring.descriptor(
                    at: Int(ring.data(1024)) + 16 * entry,
                    address: ring.data(512),
                    length: 8,
                    flags: last ? 0 : 1,
                    next: last ? 0 : UInt16(entry + 1)
                )
            }
            ring.descriptor(4, address: ring.data(1024), length: UInt32(16 * tableCount), flags: 4)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func addressPlusLengthOverflows() throws {
        try expectViolation(.bufferOutOfRange) { ring in
            ring.descriptor(0, address: UInt64.max - 8, length: 64)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func bufferOutsideTheRegion() throws {
        try expectViolation(.bufferOutOfRange) { ring in
            ring.descriptor(0, address: UInt64(ring.layout.regionSize + 64), length: 16)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func bufferRunningPastTheEndOfTheRegion() throws {
        try expectViolation(.bufferOutOfRange) { ring in
            ring.descriptor(0, address: UInt64(ring.layout.regionSize - 8), length: 16, flags: 2)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func bufferOverTheRingsInsteadOfTheDataArea() throws {
        try expectViolation(.bufferOutOfRange) { ring in
            ring.descriptor(0, address: UInt64(ring.queue.usedRingOffset), length: 16, flags: 2)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func writableDescriptorBeforeReadableOne() throws {
        try expectViolation(.writableBeforeReadable) { ring in
            ring.descriptor(0, address: ring.data(0), length: 16, flags: 2 | 1, next: 1)
            ring.descriptor(1, address: ring.data(16), length: 16, flags: 0)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func writableBeforeReadableInsideIndirectTable() throws {
        try expectViolation(.writableBeforeReadable) { ring in
            ring.descriptor(at: Int(ring.data(1024)), address: ring.data(0), length: 16, flags: 2 | 1, next: 1)
            ring.descriptor(at: Int(ring.data(1040)), address: ring.data(16), length: 16)
            ring.descriptor(0, address: ring.data(1024), length: 32, flags: 4)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func nestedIndirectTable() throws {
        try expectViolation(.nestedIndirect) { ring in
            ring.descriptor(at: Int(ring.data(1024)), address: ring.data(2048), length: 16, flags: 4)
            ring.descriptor(0, address: ring.data(1024), length: 16, flags: 4)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func indirectTableLengthNotMultipleOf16() throws {
        try expectViolation(.indirectLengthInvalid) { ring in
            ring.descriptor(0, address: ring.data(1024), length: 24, flags: 4)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func indirectTableOfZeroLength() throws {
        try expectViolation(.indirectLengthInvalid) { ring in
            ring.descriptor(0, address: ring.data(1024), length: 0, flags: 4)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func indirectTableOutsideTheRegion() throws {
        try expectViolation(.indirectOutOfRange) { ring in
            ring.descriptor(0, address: UInt64(ring.layout.regionSize - 16), length: 64, flags: 4)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func indirectTableAddressOverflows() throws {
        try expectViolation(.indirectOutOfRange) { ring in
            ring.descriptor(0, address: UInt64.max - 15, length: 32, flags: 4)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func indirectTogetherWithNext() throws {
        try expectViolation(.indirectWithNext) { ring in
            ring.descriptor(at: Int(ring.data(1024)), address: ring.data(0), length: 16)
            ring.descriptor(0, address: ring.data(1024), length: 16, flags: 4 | 1, next: 1)
            ring.descriptor(1, address: ring.data(16), length: 16)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func indirectWithoutTheFeature() throws {
        try expectViolation(.indirectNotNegotiated, features: [.eventIndex]) { ring in
            ring.descriptor(at: Int(ring.data(1024)), address: ring.data(0), length: 16)
            ring.descriptor(0, address: ring.data(1024), length: 16, flags: 4)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func loopInsideIndirectTable() throws {
        try expectViolation(.descriptorLoop) { ring in
            ring.descriptor(at: Int(ring.data(1024)), address: ring.data(0), length: 16, flags: 1, next: 1)
            ring.descriptor(at: Int(ring.data(1040)), address: ring.data(16), length: 16, flags: 1, next: 0)
            ring.descriptor(0, address: ring.data(1024), length: 32, flags: 4)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func nextOutsideIndirectTable() throws {
        try expectViolation(.nextOutOfRange) { ring in
            ring.descriptor(at: Int(ring.data(1024)), address: ring.data(0), length: 16, flags: 1, next: 2)
            ring.descriptor(at: Int(ring.data(1040)), address: ring.data(16), length: 16)
            ring.descriptor(0, address: ring.data(1024), length: 32, flags: 4)
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    @Test func headMadeAvailableTwiceWhileTheDeviceHoldsIt() throws {
        try expectViolation(.headAlreadyInFlight, requestsBefore: 1) { ring in
            ring.descriptor(0, address: ring.data(0), length: 16)
            ring.makeAvailable(head: 0, slot: 0)
            ring.makeAvailable(head: 0, slot: 1)
            ring.availableIndex = 2
        }
    }

    @Test func validChainIsAcceptedAndSeenInPlace() throws {
        let layout = try RegionLayout(queueSizes: [Self.queueSize], dataAreaSize: 4096, features: .all)
        let region = try GuardedRegion(layout: layout)
        let ring = RingWriter(region: region, layout: layout)
        var device = try DeviceQueue(region: region, notifier: CountingNotifier())
        for (index, byte) in Array("virtio".utf8).enumerated() {
            ring.store(byte, at: Int(ring.data(100)) + index)
        }
        ring.descriptor(at: Int(ring.data(1024)), address: ring.data(100), length: 6, flags: 1, next: 1)
        ring.descriptor(at: Int(ring.data(1040)), address: ring.data(200), length: 32, flags: 2)
        ring.descriptor(5, address: ring.data(1024), length: 32, flags: 4)
        ring.makeAvailable(head: 5, slot: 0)
        ring.availableIndex = 1
        let request = try device.requireRequest()
        #expect(request.id == 5)
        #expect(request.readableByteCount == 6)
        #expect(request.writableByteCount == 32)
        #expect(request.totalByteCount == 38)
        var text: [UInt8] = []
        device.forEachReadable(in: request) { text += $0 }
        #expect(String(decoding: text, as: UTF8.self) == "virtio")
        let written = Array("VIRTIO".utf8).withUnsafeBytes { device.scatter($0, into: request) }
        #expect(written == 6)
        try device.complete(request, written: written)
        #expect(ring.usedIndex == 1)
        #expect(ring.usedElement(slot: 0) == (5, 6))
        #expect(region.guardsIntact)
    }
}
