import Testing
import Virtqueue
import VirtqueueHeap

/// The packed ring's wire layer (virtio 1.1+ §2.8, docs/wire-format.md §12), byte for byte
/// against values computed by hand from the spec: descriptors, flags for both wrap counters,
/// event-suppression structures, the need-event test across a wrap, positions in rings whose
/// size is not a power of two, and placements.
@Suite("Packed ring wire layer")
struct PackedRingTests {
    /// The bytes `body` leaves in a zeroed buffer of `count` bytes (16-byte aligned).
    static func bytes(_ count: Int, _ body: (UnsafeMutableRawPointer) -> Void) -> [UInt8] {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 16)
        defer { raw.deallocate() }
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: count)
        body(raw)
        return Array(UnsafeRawBufferPointer(start: raw, count: count))
    }

    /// `bytes` copied into an aligned buffer and handed to `body`.
    static func load<R>(_ bytes: [UInt8], _ body: (UnsafeRawPointer) -> R) -> R {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 16)
        defer { raw.deallocate() }
        raw.copyMemory(from: bytes, byteCount: bytes.count)
        return body(raw)
    }

    // MARK: Descriptors

    @Test func aDescriptorIsSixteenLittleEndianBytesInSpecOrder() {
        // addr 0x1122334455667788, len 0xAABBCCDD, id 0x0102, flags NEXT | WRITE | AVAIL = 0x0083.
        let descriptor = PackedDescriptor(
            address: 0x1122_3344_5566_7788,
            length: 0xAABB_CCDD,
            id: 0x0102,
            flags: 0x0083
        )
        let encoded = Self.bytes(16) { descriptor.store(to: $0) }
        #expect(
            encoded == [
                0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xDD, 0xCC, 0xBB, 0xAA, 0x02, 0x01, 0x83, 0x00,
            ]
        )
        #expect(Self.load(encoded) { PackedDescriptor(loadingFrom: $0) } == descriptor)
        #expect(PackedRingFields.descriptorByteCount == 16)
        #expect(
            [
                PackedRingFields.addressOffset, PackedRingFields.lengthOffset, PackedRingFields.idOffset,
                PackedRingFields.flagsOffset,
            ]
                == [0, 8, 12, 14]
        )
    }

    @Test func flagBitsAreTheSpecs() {
        #expect(PackedRingFields.nextFlag == 1)
        #expect(PackedRingFields.writeFlag == 2)
        #expect(PackedRingFields.indirectFlag == 4)
        #expect(PackedRingFields.availableFlag == 0x0080)
        #expect(PackedRingFields.usedFlag == 0x8000)
    }

    /// §2.8.1: available sets AVAIL = the driver's wrap counter and USED its inverse; used sets
    /// both to the device's wrap counter.
    @Test func availableAndUsedFlagsForBothWrapCounters() {
        #expect(PackedRingFields.availableFlags(wrap: true) == 0x0080)
        #expect(PackedRingFields.availableFlags(wrap: false) == 0x8000)
        #expect(PackedRingFields.usedFlags(wrap: true) == 0x8080)
        #expect(PackedRingFields.usedFlags(wrap: false) == 0x0000)

        let first = PackedDescriptor.available(address: 0x4000, length: 512, id: 3, elementFlags: 0x0001, wrap: true)
        #expect(Self.bytes(16) { first.store(to: $0) }.suffix(4) == [0x03, 0x00, 0x81, 0x00])
        let second = PackedDescriptor.available(address: 0x4000, length: 512, id: 3, elementFlags: 0x0006, wrap: false)
        #expect(Self.bytes(16) { second.store(to: $0) }.suffix(4) == [0x03, 0x00, 0x06, 0x80])
        // Only NEXT, WRITE and INDIRECT pass from the element's flags.
        let masked = PackedDescriptor.available(address: 0, length: 0, id: 0, elementFlags: 0xFFFF, wrap: true)
        #expect(masked.flags == 0x0087)
    }

    @Test func aUsedDescriptorCarriesTheIdTheLengthAndWriteWhenItWrote() {
        let wrote = PackedDescriptor.used(id: 0x0203, written: 0x1000, wrap: true)
        #expect(
            Self.bytes(16) { wrote.store(to: $0) } == [
                0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x10, 0x00, 0x00, 0x03, 0x02, 0x82, 0x80,
            ]
        )
        let read = PackedDescriptor.used(id: 7, written: 0, wrap: false)
        #expect(Self.bytes(16) { read.store(to: $0) } == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07, 0x00, 0x00, 0x00])
        #expect(wrote.isUsed(wrap: true) && !wrote.isUsed(wrap: false))
        #expect(read.isUsed(wrap: false) && !read.isUsed(wrap: true))
    }

    /// Every combination of AVAIL and USED, for both wrap counters, against the spec's rules:
    /// available when AVAIL ≠ USED and AVAIL = w; used when AVAIL = USED = w.
    @Test(arguments: [UInt16(0x0000), 0x0080, 0x8000, 0x8080])
    func availabilityTruthTable(bits: UInt16) {
        let avail = bits & 0x0080 != 0
        let used = bits & 0x8000 != 0
        for wrap in [false, true] {
            for extra: UInt16 in [0, 0x0007] {
                let flags = bits | extra
                #expect(PackedRingFields.isAvailable(flags, wrap: wrap) == (avail != used && avail == wrap))
                #expect(PackedRingFields.isUsed(flags, wrap: wrap) == (avail == used && used == wrap))
            }
        }
        // The zero-initialised ring is neither available nor used for wrap counter 1, where
        // both sides start.
        #expect(!PackedRingFields.isAvailable(0, wrap: true) && !PackedRingFields.isUsed(0, wrap: true))
    }

    // MARK: Positions and wrap counters

    @Test func positionsStartAtZeroWithWrapCounterOne() {
        #expect(PackedRingPosition.start == PackedRingPosition(index: 0, wrapCounter: true))
        #expect(PackedRingPosition.start.cursorValue == 0x8000)
        #expect(QueueCursor.packedStart == QueueCursor(nextAvailable: 0x8000, nextUsed: 0x8000))
    }

    /// Sizes that are not powers of two, one, and the largest: advancing past the last
    /// descriptor goes to 0 and flips the wrap counter; a whole ring comes back with it flipped.
    @Test(arguments: [1, 3, 5, 6, 7, 100, 32767, 32768])
    func advancingWrapsAtTheQueueSize(size: Int) {
        let last = PackedRingPosition(index: UInt16(size - 1), wrapCounter: true)
        #expect(last.advanced(by: 1, size: size) == PackedRingPosition(index: 0, wrapCounter: false))
        #expect(last.advanced(by: 0, size: size) == last)
        let start = PackedRingPosition.start
        #expect(start.advanced(by: size, size: size) == PackedRingPosition(index: 0, wrapCounter: false))
        #expect(start.advanced(by: size, size: size).advanced(by: size, size: size) == start)
        // One descriptor at a time, two laps: every index once per lap, the counter flipping at 0.
        var position = start
        var seen: [PackedRingPosition] = []
        for _ in 0..<min(2 * size, 64) {
            seen.append(position)
            position = position.advanced(by: 1, size: size)
        }
        for (step, visited) in seen.enumerated() {
            #expect(Int(visited.index) == step % size)
            #expect(visited.wrapCounter == ((step / size) % 2 == 0))
            #expect(visited.distance(from: start, size: size) == step)
        }
    }

    @Test func cursorValuesKeepTheIndexInBitsZeroToFourteenAndTheWrapCounterInBitFifteen() {
        let last = PackedRingPosition(index: 32767, wrapCounter: true)
        #expect(last.cursorValue == 0xFFFF)
        #expect(PackedRingPosition(cursorValue: 0xFFFF) == last)
        #expect(PackedRingPosition(cursorValue: 0x0005) == PackedRingPosition(index: 5, wrapCounter: false))
        #expect(PackedRingPosition(index: 5, wrapCounter: true).cursorValue == 0x8005)
    }

    // MARK: Event suppression

    @Test func eventStructuresAreFourLittleEndianBytes() {
        let desc = PackedEventSuppression.descriptor(PackedRingPosition(index: 5, wrapCounter: true))
        #expect(Self.bytes(4) { desc.store(to: $0) } == [0x05, 0x80, 0x02, 0x00])
        let previousLap = PackedEventSuppression.descriptor(PackedRingPosition(index: 0x1234, wrapCounter: false))
        #expect(Self.bytes(4) { previousLap.store(to: $0) } == [0x34, 0x12, 0x02, 0x00])
        #expect(Self.bytes(4) { PackedEventSuppression.enable.store(to: $0) } == [0, 0, 0, 0])
        #expect(Self.bytes(4) { PackedEventSuppression.disable.store(to: $0) } == [0, 0, 0x01, 0x00])
        #expect(Self.load([0x05, 0x80, 0x02, 0x00]) { PackedEventSuppression(loadingFrom: $0) } == desc)
        #expect(PackedRingFields.eventSuppressionByteCount == 4)
        #expect(PackedRingFields.eventOffWrapOffset == 0 && PackedRingFields.eventFlagsOffset == 2)
        #expect(
            [PackedRingFields.eventEnable, PackedRingFields.eventDisable, PackedRingFields.eventDescriptor] == [
                0, 1, 2,
            ]
        )
    }

    @Test func enableDisableAndReservedModes() {
        let new = PackedRingPosition(index: 3, wrapCounter: true)
        #expect(PackedEventSuppression.enable.needsNotification(new: new, moves: 1, size: 8))
        #expect(!PackedEventSuppression.disable.needsNotification(new: new, moves: 1, size: 8))
        // Reserved mode 3 and reserved bits: notify (an extra notification is harmless).
        #expect(PackedEventSuppression(offWrap: 0, flags: 3).needsNotification(new: new, moves: 1, size: 8))
        #expect(PackedEventSuppression(offWrap: 0, flags: 0x0102).needsNotification(new: new, moves: 1, size: 8))
        // Nothing published: nothing to say, whatever the mode.
        for event in [
            PackedEventSuppression.enable, .disable, .descriptor(new), PackedEventSuppression(offWrap: 0, flags: 3),
        ] {
            #expect(!event.needsNotification(new: new, moves: 0, size: 8))
        }
    }

    /// Hand-computed from `vring_need_event`: a ring of 8; the side was at 7 (wrap 1) and
    /// published 3 descriptors, 7, 0 and 1, so it is now at 2 (wrap 0). An event on any of the
    /// three needs a notification; on the next one, or one before 7, it does not.
    @Test(arguments: [
        (UInt16(0x8007), true),  // 7, wrap 1: the lap before, offset 7 − 8 = −1; 2 − (−1) − 1 = 2 < 3
        (0x0000, true),  // 0, wrap 0: 2 − 0 − 1 = 1 < 3
        (0x0001, true),  // 1, wrap 0: 0 < 3
        (0x0002, false),  // 2, wrap 0: the next descriptor, not yet published: −1
        (0x0003, false),  // ahead in this lap
        (0x8006, false),  // 6, wrap 1: published before the last check: 2 − (−2) − 1 = 3, not < 3
        (0x8002, false),  // 2, wrap 1: a whole lap back, 7 behind
    ])
    func needEventAcrossTheWrap(offWrap: UInt16, expected: Bool) {
        let event = PackedEventSuppression(offWrap: offWrap, flags: PackedRingFields.eventDescriptor)
        let new = PackedRingPosition(index: 7, wrapCounter: true).advanced(by: 3, size: 8)
        #expect(new == PackedRingPosition(index: 2, wrapCounter: false))
        #expect(event.needsNotification(new: new, moves: 3, size: 8) == expected, "\(event)")
    }

    /// Against plain arithmetic on unbounded positions: for rings of several sizes (not only
    /// powers of two), every start, every number of descriptors published (up to three laps)
    /// and every event a sleeping peer can have set (at most one ring behind the publisher),
    /// notify exactly when the event's descriptor is one of those just published.
    @Test(arguments: [1, 2, 3, 5, 8])
    func needEventMatchesLinearArithmetic(size: Int) {
        for oldLinear in 0..<(2 * size) {
            for moves in 1...(3 * size) {
                let newLinear = oldLinear + moves
                let new = Self.position(newLinear, size: size)
                for eventLinear in max(0, newLinear - size)...newLinear {
                    let event = PackedEventSuppression.descriptor(Self.position(eventLinear, size: size))
                    let expected = eventLinear >= oldLinear && eventLinear < newLinear
                    #expect(
                        event.needsNotification(new: new, moves: moves, size: size) == expected,
                        "size \(size), \(oldLinear) → \(newLinear), event \(eventLinear)"
                    )
                }
            }
        }
    }

    /// Position number `linear` from the start of a ring of `size`.
    static func position(_ linear: Int, size: Int) -> PackedRingPosition {
        PackedRingPosition(index: UInt16(linear % size), wrapCounter: (linear / size) % 2 == 0)
    }

    @Test func needEventAtTheLargestQueue() {
        // 32768: offsets use all 15 bits. The side was at 32766 (wrap 1) and published 4.
        let new = PackedRingPosition(index: 32766, wrapCounter: true).advanced(by: 4, size: 32768)
        #expect(new == PackedRingPosition(index: 2, wrapCounter: false))
        let atLast = PackedEventSuppression(offWrap: 0xFFFF, flags: 2)  // 32767, wrap 1
        #expect(atLast.needsNotification(new: new, moves: 4, size: 32768))
        let before = PackedEventSuppression(offWrap: 0xFFFD, flags: 2)  // 32765, wrap 1
        #expect(!before.needsNotification(new: new, moves: 4, size: 32768))
        let next = PackedEventSuppression(offWrap: 0x0002, flags: 2)
        #expect(!next.needsNotification(new: new, moves: 4, size: 32768))
        // More than 2^16 moves since the last check: a fresh event is still judged right.
        #expect(atLast.needsNotification(new: new, moves: 70_000, size: 32768))
    }

    // MARK: Placements

    static func packed(
        size: Int,
        descriptors: UInt64 = 0x1000,
        driver: UInt64 = 0x2000,
        device: UInt64 = 0x2004,
        cursor: QueueCursor? = nil
    ) -> QueuePlacement {
        QueuePlacement(
            format: .packed,
            size: size,
            descriptorArea: descriptors,
            driverArea: driver,
            deviceArea: device,
            cursor: cursor
        )
    }

    @Test(arguments: [1, 3, 5, 100, 257, 32768])
    func packedPlacementsTakeAnySizeUpTo32768(size: Int) throws {
        let placed = QueuePlacement(
            format: .packed,
            size: size,
            descriptorArea: 0x10_0000,
            driverArea: 0x1000,
            deviceArea: 0x1004
        )
        try placed.validate()
        #expect(placed.cursor == .packedStart)
        #expect(
            placed.areas.map(\.name) == ["descriptor ring", "driver event suppression", "device event suppression"]
        )
        #expect(placed.areas.map { $0.range.count } == [16 * size, 4, 4])
        #expect(RingFormat.packed.areas(size: size).map(\.alignment) == [16, 4, 4])
    }

    @Test func fieldAddressesOfAPackedPlacement() {
        let fields = PackedRingAddresses(Self.packed(size: 5, descriptors: 0x1000, driver: 0x2000, device: 0x2004))
        #expect(fields.descriptor(0) == 0x1000)
        #expect(fields.descriptor(4) == 0x1040)
        #expect(fields.descriptor(7) == 0x1020)  // 7 mod 5 = 2
        #expect(fields.descriptorFlags(4) == 0x104E)
        #expect(fields.driverEvent == 0x2000 && fields.deviceEvent == 0x2004)
    }

    @Test func aSplitSizeMustStillBeAPowerOfTwo() {
        let error = #expect(throws: VirtqueueError.self) {
            try QueuePlacement(size: 5, descriptorArea: 0x1000, driverArea: 0x2000, deviceArea: 0x3000).validate()
        }
        #expect(error?.code == .invalidQueueSize)
        #expect(error?.message.contains("queue size 5 is not a power of two") == true)
    }

    static let badPlacements: [(name: String, placement: QueuePlacement, code: VirtqueueError.Code, words: String)] = [
        ("size 0", packed(size: 0), .invalidQueueSize, "packed queue size 0 is not between 1 and 32768"),
        ("size 32769", packed(size: 32769), .invalidQueueSize, "packed queue size 32769 is not between 1 and 32768"),
        (
            "descriptor ring misaligned", packed(size: 4, descriptors: 0x1008), .misaligned,
            "descriptor ring at bus address 0x1008 is not 16-byte aligned"
        ),
        (
            "driver event misaligned", packed(size: 4, driver: 0x2002), .misaligned,
            "driver event suppression at bus address 0x2002 is not 4-byte aligned"
        ),
        (
            "device event misaligned", packed(size: 4, device: 0x2006), .misaligned,
            "device event suppression at bus address 0x2006 is not 4-byte aligned"
        ),
        (
            "events overlapping", packed(size: 4, device: 0x2000), .invalidPlacement,
            "driver event suppression 0x2000..<0x2004 overlaps device event suppression 0x2000..<0x2004"
        ),
        (
            "event inside the ring", packed(size: 4, driver: 0x1030), .invalidPlacement,
            "descriptor ring 0x1000..<0x1040 overlaps driver event suppression 0x1030..<0x1034"
        ),
        (
            "ring past 2^64", packed(size: 4, descriptors: 0xFFFF_FFFF_FFFF_FFF0), .invalidPlacement,
            "descriptor ring at bus address 0xfffffffffffffff0 runs past 2^64"
        ),
        (
            "cursor past the ring", packed(size: 5, cursor: QueueCursor(nextAvailable: 0x8005, nextUsed: 0x8000)),
            .invalidPlacement, "cursor's next available position 5 (wrap 1) is not below the packed queue size 5"
        ),
        (
            "used cursor past the ring", packed(size: 5, cursor: QueueCursor(nextAvailable: 0x8000, nextUsed: 0x0007)),
            .invalidPlacement, "cursor's next used position 7 (wrap 0) is not below the packed queue size 5"
        ),
        (
            "driver more than a ring ahead",
            packed(size: 5, cursor: QueueCursor(nextAvailable: 0x0002, nextUsed: 0x8001)),
            .invalidPlacement,
            "cursor 2 (wrap 0) is 6 descriptors ahead of 1 (wrap 1), more than the packed queue size 5"
        ),
    ]

    @Test(arguments: badPlacements.indices)
    func aBadPackedPlacementIsRefusedByName(index: Int) {
        let bad = Self.badPlacements[index]
        let error = #expect(throws: VirtqueueError.self, "\(bad.name)") { try bad.placement.validate() }
        #expect(error?.code == bad.code, "\(bad.name): \(String(describing: error))")
        #expect(error?.message.contains(bad.words) == true, "\(bad.name): \(String(describing: error))")
    }

    @Test func aResumedPackedCursorAtMostOneRingAheadIsAccepted() throws {
        // Driver at 2 (wrap 0), device at 2 (wrap 1): a full ring of 5 in flight.
        try Self.packed(size: 5, cursor: QueueCursor(nextAvailable: 0x0002, nextUsed: 0x8002)).validate()
        try Self.packed(size: 5, cursor: QueueCursor(nextAvailable: 0x0000, nextUsed: 0x0000)).validate()
    }

    @Test func ringFormatsAreNumberedForTheHeader() throws {
        #expect(try #require(RingFormat(headerValue: 1)).description == "packed")
        #expect(RingFormat(headerValue: 2) == nil)
        #expect(RingFormat.split.headerValue == 0 && RingFormat.packed.headerValue == 1)
    }

    // MARK: The queues run the packed ring and IN_ORDER, together too

    @Test func queuesRunInOrderOnThePackedRing() throws {
        try Features([.version1, .ringPacked]).validateForRing()
        try Features([.version1, .inOrder]).validateForRing()
        try Features([.version1, .ringPacked, .inOrder]).validateForRing()
        let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 64, features: [.version1, .ringPacked, .inOrder])
        #expect(layout.format == .packed && layout.features.contains(.inOrder))
        // Other transport bits keep the plain message.
        let other = #expect(throws: VirtqueueError.self) {
            try Features([.version1, .notificationData]).validateForRing()
        }
        #expect(other?.message == "feature NOTIFICATION_DATA (bit 38) is not implemented by the ring core")
    }

    /// A placement's ring format and RING_PACKED go together: a queue refuses either without
    /// the other, by name, and runs a packed placement with the bit.
    @Test func aPackedPlacementNeedsRingPackedAndRuns() throws {
        let placement = QueuePlacement(
            format: .packed,
            size: 5,
            descriptorArea: 0x1000,
            driverArea: 0x1100,
            deviceArea: 0x1104
        )
        let memory = try HeapGuestMemory(mappings: [(busAddress: 0x1000, byteCount: 0x4000)])
        let error = #expect(throws: VirtqueueError.self) {
            _ = try DeviceQueue(memory: memory, placement: placement, notifier: CountingNotifier(), features: .version1)
        }
        #expect(error?.code == .invalidPlacement)
        #expect(error?.message.contains("ring format packed disagrees with features") == true)
        var split = placement
        split.format = .split
        split.size = 4
        let splitError = #expect(throws: VirtqueueError.self) {
            _ = try DeviceQueue(
                memory: memory,
                placement: split,
                notifier: CountingNotifier(),
                features: [.version1, .ringPacked]
            )
        }
        #expect(splitError?.code == .invalidPlacement)
        #expect(splitError?.message.contains("RING_PACKED (bit 34) is set") == true)
        let notifiers = CountingNotifier.makePair()
        var device = try DeviceQueue(
            memory: memory,
            placement: placement,
            notifier: notifiers.device,
            features: [.version1, .ringPacked]
        )
        var driver = try DriverQueue(
            memory: memory,
            placement: placement,
            notifier: notifiers.driver,
            features: [.version1, .ringPacked],
            pool: 0x2000..<0x4000,
            bufferSize: 64
        )
        var chain = driver.makeChain()
        try driver.appendWritable(to: &chain, capacity: 32)
        try driver.submit(chain)
        let request = try device.requireRequest()
        let reply = [UInt8](repeating: 7, count: 32)
        let written = try reply.withUnsafeBytes { bytes in try device.scatter(bytes, into: request) }
        try device.complete(request, written: written)
        let used = try driver.requireUsed()
        #expect(used.writtenByteCount == 32)
        try driver.free(used)
    }
}
