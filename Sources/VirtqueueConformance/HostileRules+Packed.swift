import Virtqueue

extension HostileDriverRule {
    /// ``plant(_:)`` on the packed ring: the rule's bad list, made available with wrap counter 1
    /// from position 0 (docs/wire-format.md §12).
    func plantPacked<Region: GuestMemory & ~Copyable>(_ ring: borrowing HostileRingWriter<Region>) {
        let size = Self.queueSize
        let available = PackedRingFields.availableFlags(wrap: true)
        let next = PackedRingFields.nextFlag | available
        let write = PackedRingFields.writeFlag
        let indirect = available | PackedRingFields.indirectFlag
        let table = ring.data(1024)
        /// Descriptor `index` of the list, available with wrap counter 1 unless `flags` say otherwise.
        func put(_ index: Int, _ address: UInt64, _ length: UInt32 = 16, id: UInt16 = 0, flags: UInt16 = available) {
            ring.packedDescriptor(index, address: address, length: length, id: id, flags: flags)
        }
        /// Entry `entry` of the indirect table at `table` (only `WRITE` and `INDIRECT` mean anything).
        func entry(_ entry: Int, _ address: UInt64, flags: UInt16 = 0) {
            ring.packedDescriptor(at: table + UInt64(16 * entry), address: address, length: 16, id: 0, flags: flags)
        }
        switch self {
        case .headOutOfRange: put(0, ring.data(0), id: UInt16(size))
        case .headMadeAvailableTwice:
            put(0, ring.data(0), id: 3)
            put(1, ring.data(16), id: 3)
        case .listLongerThanQueue:
            for index in 0..<size { put(index, ring.data(16 * index), flags: next) }
        case .listWithoutEnd:
            put(0, ring.data(0), flags: next)
            put(1, ring.data(16), flags: 0)
        case .listRunningIntoLastLap:
            put(0, ring.data(0), flags: next)
            put(1, ring.data(16), flags: PackedRingFields.availableFlags(wrap: false))
        case .usedFlagsAtTheDevicePosition: put(0, ring.data(0), flags: PackedRingFields.usedFlags(wrap: true))
        case .addressPlusLengthOverflows: put(0, UInt64.max - 8, 64)
        case .bufferOutsideTheRegion: put(0, UInt64(ring.layout.regionSize + 64))
        case .bufferRunningPastTheRegionEnd: put(0, UInt64(ring.layout.regionSize - 8), flags: available | write)
        case .bufferOverTheRings: put(0, UInt64(ring.queue.descriptorTableOffset), flags: available | write)
        case .writableBeforeReadable:
            put(0, ring.data(0), flags: next | write)
            put(1, ring.data(16))
        case .writableBeforeReadableInIndirectTable:
            entry(0, ring.data(0), flags: write)
            entry(1, ring.data(16))
            put(0, table, 32, flags: indirect)
        case .nestedIndirectTable:
            entry(0, ring.data(2048), flags: PackedRingFields.indirectFlag)
            put(0, table, 16, flags: indirect)
        case .indirectLengthNotMultipleOf16: put(0, table, 24, flags: indirect)
        case .indirectLengthZero: put(0, table, 0, flags: indirect)
        case .indirectTableOutsideTheRegion: put(0, UInt64(ring.layout.regionSize - 16), 64, flags: indirect)
        case .indirectTableAddressOverflows: put(0, UInt64.max - 15, 32, flags: indirect)
        case .indirectTogetherWithNext:
            entry(0, ring.data(0))
            put(0, table, 16, flags: indirect | PackedRingFields.nextFlag)
            put(1, ring.data(16))
        case .indirectInsideAList:
            entry(0, ring.data(0))
            put(0, ring.data(16), flags: next)
            put(1, table, 16, flags: indirect)
        case .indirectNotNegotiated:
            entry(0, ring.data(0))
            put(0, table, 16, flags: indirect)
        case .chainLongerThanQueueThroughIndirectTable:
            for index in 0...size { entry(index, ring.data(16 * index)) }
            put(0, table, UInt32(16 * (size + 1)), flags: indirect)
        case .availableIndexJump, .nextOutOfRange, .descriptorLoop, .descriptorSelfLoop,
            .chainLongerThanQueueMixingDirectAndIndirect, .loopInsideIndirectTable, .nextOutsideIndirectTable:
            return
        }
    }
}

extension HostileDeviceRule {
    /// ``plant(_:)`` on the packed ring: the rule's used descriptors, written at the driver's
    /// used positions (chain 0 at 0, chain 1 at 1 and 2).
    func plantPacked<Region: GuestMemory & ~Copyable>(_ ring: borrowing HostileRingWriter<Region>) {
        switch self {
        case .usedIDOutOfRange: ring.packedUsed(0, id: UInt16(Self.queueSize), length: 0)
        case .usedIDFarOutOfRange: ring.packedUsed(0, id: UInt16.max, length: 0)
        case .usedIDNeverSubmitted: ring.packedUsed(0, id: 5, length: 0)
        case .usedIDInsideAChain: ring.packedUsed(0, id: 2, length: 0)
        case .usedIDReturnedTwice:
            // Chain 0 takes 1 descriptor: its used descriptor at 0 moves the driver to 1.
            ring.packedUsed(0, id: 0, length: 0)
            ring.packedUsed(1, id: 0, length: 0)
        case .usedLengthTooLarge: ring.packedUsed(0, id: 1, length: 65)
        case .usedLengthOnReadOnlyChain: ring.packedUsed(0, id: 0, length: 1)
        case .wrapBitsDisagree:
            // AVAIL 0 and USED 1 — available for wrap counter 0 — where the driver made chain 0
            // available with wrap counter 1: no legal ring holds it.
            ring.packedUsed(0, id: 0, length: 0, flags: PackedRingFields.availableFlags(wrap: false))
        case .usedWithLastLapWrapCounter: ring.packedUsed(0, id: 0, length: 0, wrap: false)
        case .usedPositionPastWhatIsInFlight:
            ring.packedUsed(0, id: 0, length: 0)
            ring.packedUsed(1, id: 1, length: 0)
            ring.packedUsed(3, id: 0, length: 0)
        case .usedIndexJump, .usedIndexMovingBackwards:
            return
        }
    }
}
