import Testing
import Virtqueue
import VirtqueueConformance

/// Every device-side rule of the trust model (docs/trust-model.md): a hostile driver plants a
/// bad value in ring memory; the device reports the typed error, the queue is broken, nothing
/// outside the region is touched, and the process does not trap.
@Suite("Device side: a hostile driver")
struct DeviceTrustTests {
    static var queueSize: Int { HostileDriverRule.queueSize }

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
        // Requests taken first are held (not completed) while the planted chain is taken: a
        // dropped request would be completed, and its head free again.
        var held: DeviceRequest?
        for taken in 0..<requestsBefore {
            let request = try device.requireRequest()
            #expect(request.segmentCount > 0)
            held = consume request
            if taken == 0 { afterFirstRequest(writer) }
        }
        defer { _ = held.take() }
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

    /// Every rule of the one hostile-chain table (``HostileDriverRule``, also run by the
    /// conformance suite on every backend), here on a region with guard bytes around it: the
    /// split ring's rules, then the packed ring's.
    @Test(arguments: HostileDriverRule.cases(for: .split))
    func hostileChain(_ rule: HostileDriverRule) throws {
        try expectViolation(rule.code, features: rule.features, requestsBefore: rule.requestsBefore) { ring in
            rule.plant(ring)
        }
    }

    @Test(arguments: HostileDriverRule.cases(for: .packed))
    func hostilePackedList(_ rule: HostileDriverRule) throws {
        try expectViolation(
            rule.code,
            features: rule.features.union(.ringPacked),
            requestsBefore: rule.requestsBefore
        ) { ring in rule.plant(ring) }
    }

    /// The driver may make available only descriptors the device has used: a list that runs on
    /// past the end of the ring into positions the device still holds is refused, naming its
    /// length and the descriptors in flight — with IN_ORDER or without, where the used position
    /// is the same. Planted: a two-descriptor list at 0 and 1, taken and held; then a list from
    /// 2 that wraps onto position 0 (available for the next lap), 7 descriptors where 6 are free.
    /// (Found by `FuzzDevicePacked`: under IN_ORDER two lists shared a held slot.)
    @Test(arguments: [false, true])
    func aPackedListOverDescriptorsInFlight(inOrder: Bool) throws {
        let size = Self.queueSize
        let available = PackedRingFields.availableFlags(wrap: true)
        let next = PackedRingFields.nextFlag
        var features = Features.all.union(.ringPacked)
        if inOrder { features.formUnion(.inOrder) }
        try expectViolation(
            .availableIndexJump,
            features: features,
            requestsBefore: 1,
            plant: { ring in
                ring.packedDescriptor(1, address: ring.data(16), length: 16, id: 0, flags: available)
                ring.packedDescriptor(0, address: ring.data(0), length: 16, id: 0, flags: available | next)
            },
            afterFirstRequest: { ring in
                ring.packedDescriptor(
                    0,
                    address: ring.data(0),
                    length: 16,
                    id: 1,
                    flags: PackedRingFields.availableFlags(wrap: false)
                )
                for index in 2..<size {
                    ring.packedDescriptor(
                        index,
                        address: ring.data(16 * index),
                        length: 16,
                        id: 1,
                        flags: available | next
                    )
                }
            }
        )
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

    @Test func validChainIsAcceptedAndSeenInPlace() throws {
        let layout = try RegionLayout(queueSizes: [Self.queueSize], dataAreaSize: 4096, features: .all)
        let region = try GuardedRegion(layout: layout)
        let ring = RingWriter(region: region, layout: layout)
        var device = try DeviceQueue(region: region, notifier: CountingNotifier())
        for (index, byte) in Array("virtio".utf8).enumerated() {
            ring.store(byte, at: Int(ring.data(100)) + index)
        }
        ring.descriptor(at: Int(ring.data(1024)), address: ring.data(100), length: 6, flags: RingWriter.next, next: 1)
        ring.descriptor(at: Int(ring.data(1040)), address: ring.data(200), length: 32, flags: RingWriter.write)
        ring.descriptor(5, address: ring.data(1024), length: 32, flags: RingWriter.indirect)
        ring.makeAvailable(head: 5, slot: 0)
        ring.availableIndex = 1
        let request = try device.requireRequest()
        #expect(request.id == 5)
        #expect(request.readableByteCount == 6)
        #expect(request.writableByteCount == 32)
        #expect(request.totalByteCount == 38)
        var text: [UInt8] = []
        try device.forEachReadable(in: request) { text += $0 }
        #expect(String(decoding: text, as: UTF8.self) == "virtio")
        let written = try Array("VIRTIO".utf8).withUnsafeBytes { try device.scatter($0, into: request) }
        #expect(written == 6)
        try device.complete(request, written: written)
        #expect(ring.usedIndex == 1)
        #expect(ring.usedElement(slot: 0) == (5, 6))
        #expect(region.guardsIntact)
    }
}
