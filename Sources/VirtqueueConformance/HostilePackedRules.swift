public import Virtqueue

/// Every device-side rule of `docs/trust-model.md` on the packed ring, and how a hostile driver
/// breaks it: the packed counterpart of ``HostileDriverRule``, used by the conformance suite's
/// ``ConformanceCheck/hostileDriver`` on every backend and by the ring core's own tests.
///
/// Each rule plants its bad list through a ``HostileRingWriter`` on a packed queue of
/// ``queueSize`` descriptors whose data area holds at least 4096 bytes, made available with
/// wrap counter 1 from position 0; a device attached with ``features`` then reports ``code`` on
/// its next `nextRequest()`, after taking ``requestsBefore`` good requests and holding them.
public enum HostilePackedDriverRule: String, CaseIterable, Sendable {
    case bufferIDOutOfRange
    case bufferIDFarOutOfRange
    case bufferIDAlreadyHeld
    case listLongerThanQueue
    case listWithoutEnd
    case listRunningIntoLastLap
    case usedFlagsAtTheDevicePosition
    case addressPlusLengthOverflows
    case bufferOutsideTheRegion
    case bufferOverTheRing
    case writableBeforeReadable
    case writableBeforeReadableInIndirectTable
    case nestedIndirectTable
    case indirectLengthNotMultipleOf16
    case indirectLengthZero
    case indirectTableOutsideTheRegion
    case indirectTogetherWithNext
    case indirectInsideAList
    case indirectNotNegotiated
    case chainLongerThanQueueThroughIndirectTable

    /// The queue size the rules are written for.
    public static let queueSize = 8

    /// The violation the device must report.
    public var code: VirtqueueError.Code {
        switch self {
        case .bufferIDOutOfRange, .bufferIDFarOutOfRange: .headOutOfRange
        case .bufferIDAlreadyHeld: .headAlreadyInFlight
        case .listLongerThanQueue, .chainLongerThanQueueThroughIndirectTable: .peerChainTooLong
        case .listWithoutEnd, .listRunningIntoLastLap: .descriptorNotAvailable
        case .usedFlagsAtTheDevicePosition: .wrapCounterMismatch
        case .addressPlusLengthOverflows, .bufferOutsideTheRegion, .bufferOverTheRing: .bufferOutOfRange
        case .writableBeforeReadable, .writableBeforeReadableInIndirectTable: .writableBeforeReadable
        case .nestedIndirectTable: .nestedIndirect
        case .indirectLengthNotMultipleOf16, .indirectLengthZero: .indirectLengthInvalid
        case .indirectTableOutsideTheRegion: .indirectOutOfRange
        case .indirectTogetherWithNext, .indirectInsideAList: .indirectWithNext
        case .indirectNotNegotiated: .indirectNotNegotiated
        }
    }

    /// The features the layout and the device use.
    public var features: Features {
        self == .indirectNotNegotiated ? [.ringPacked, .eventIndex] : Features.all.union(.ringPacked)
    }

    /// Requests the device takes, correctly, before the violation (and holds).
    public var requestsBefore: Int { self == .bufferIDAlreadyHeld ? 1 : 0 }

    /// Writes the rule's hostile list (and makes it available) through `ring`.
    public func plant<Region: GuestMemory & ~Copyable>(_ ring: borrowing HostileRingWriter<Region>) {
        let size = Self.queueSize
        let available = PackedRingFields.availableFlags(wrap: true)
        let next = PackedRingFields.nextFlag | available
        let write = PackedRingFields.writeFlag
        let indirect = PackedRingFields.indirectFlag
        let table = ring.data(1024)
        /// One descriptor of the list, made available with wrap counter 1.
        func put(_ index: Int, _ address: UInt64, _ length: UInt32 = 16, id: UInt16 = 0, flags: UInt16 = available) {
            ring.packedDescriptor(index, address: address, length: length, id: id, flags: flags)
        }
        /// Entry `entry` of the indirect table at `table`.
        func entry(_ entry: Int, _ address: UInt64, flags: UInt16 = 0) {
            ring.packedDescriptor(at: table + UInt64(16 * entry), address: address, length: 16, id: 0, flags: flags)
        }
        switch self {
        case .bufferIDOutOfRange:
            put(0, ring.data(0), id: UInt16(size))
        case .bufferIDFarOutOfRange:
            put(0, ring.data(0), id: UInt16.max)
        case .bufferIDAlreadyHeld:
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
        case .usedFlagsAtTheDevicePosition:
            put(0, ring.data(0), flags: PackedRingFields.usedFlags(wrap: true))
        case .addressPlusLengthOverflows:
            put(0, UInt64.max - 8, 64)
        case .bufferOutsideTheRegion:
            put(0, UInt64(ring.layout.regionSize + 64))
        case .bufferOverTheRing:
            put(0, UInt64(ring.queue.descriptorTableOffset), flags: available | write)
        case .writableBeforeReadable:
            put(0, ring.data(0), flags: next | write)
            put(1, ring.data(16))
        case .writableBeforeReadableInIndirectTable:
            entry(0, ring.data(0), flags: write)
            entry(1, ring.data(16))
            put(0, table, 32, flags: available | indirect)
        case .nestedIndirectTable:
            entry(0, ring.data(2048), flags: indirect)
            put(0, table, 16, flags: available | indirect)
        case .indirectLengthNotMultipleOf16:
            put(0, table, 24, flags: available | indirect)
        case .indirectLengthZero:
            put(0, table, 0, flags: available | indirect)
        case .indirectTableOutsideTheRegion:
            put(0, UInt64(ring.layout.regionSize - 16), 64, flags: available | indirect)
        case .indirectTogetherWithNext:
            entry(0, ring.data(0))
            put(0, table, 16, flags: next | indirect)
            put(1, ring.data(16))
        case .indirectInsideAList:
            entry(0, ring.data(0))
            put(0, ring.data(16), flags: next)
            put(1, table, 16, flags: available | indirect)
        case .indirectNotNegotiated:
            entry(0, ring.data(0))
            put(0, table, 16, flags: available | indirect)
        case .chainLongerThanQueueThroughIndirectTable:
            for index in 0...size { entry(index, ring.data(16 * index)) }
            put(0, table, UInt32(16 * (size + 1)), flags: available | indirect)
        }
    }
}

/// Every driver-side rule of `docs/trust-model.md` on the packed ring, and how a hostile device
/// breaks it: the packed counterpart of ``HostileDeviceRule``, used by the conformance suite's
/// ``ConformanceCheck/hostileDevice`` on every backend and by the ring core's own tests.
///
/// The driver, on a packed queue of ``queueSize`` descriptors with 256-byte buffers, has
/// submitted chain 0 (one readable segment, at position 0) and chain 1 (a readable and a 64-byte
/// writable segment, at positions 1 and 2) before the device plants anything; it then takes
/// ``goodTakesBefore`` used chains correctly and reports ``code`` on the next.
public enum HostilePackedDeviceRule: String, CaseIterable, Sendable {
    case usedIDOutOfRange
    case usedIDFarOutOfRange
    case usedIDNeverSubmitted
    case usedIDInsideAChain
    case usedIDReturnedTwice
    case usedLengthTooLarge
    case usedLengthOnReadOnlyChain
    case wrapBitsDisagree
    case usedWithLastLapWrapCounter
    case usedPositionPastWhatIsInFlight

    /// The queue size the rules are written for.
    public static let queueSize = 8

    /// The violation the driver must report.
    public var code: VirtqueueError.Code {
        switch self {
        case .usedIDOutOfRange, .usedIDFarOutOfRange: .usedIDOutOfRange
        case .usedIDNeverSubmitted, .usedIDInsideAChain, .usedIDReturnedTwice: .usedIDNotInFlight
        case .usedLengthTooLarge, .usedLengthOnReadOnlyChain: .usedLengthTooLarge
        case .wrapBitsDisagree, .usedWithLastLapWrapCounter: .wrapCounterMismatch
        case .usedPositionPastWhatIsInFlight: .usedIndexJump
        }
    }

    /// Used chains the driver takes, correctly, before the violation.
    public var goodTakesBefore: Int {
        switch self {
        case .usedIDReturnedTwice: 1
        case .usedPositionPastWhatIsInFlight: 2
        default: 0
        }
    }

    /// Writes the rule's hostile used descriptors through `ring`.
    public func plant<Region: GuestMemory & ~Copyable>(_ ring: borrowing HostileRingWriter<Region>) {
        switch self {
        case .usedIDOutOfRange: ring.packedUsed(0, id: UInt16(Self.queueSize), length: 0)
        case .usedIDFarOutOfRange: ring.packedUsed(0, id: UInt16.max, length: 0)
        case .usedIDNeverSubmitted: ring.packedUsed(0, id: 5, length: 0)
        case .usedIDInsideAChain: ring.packedUsed(0, id: 2, length: 0)
        case .usedIDReturnedTwice:
            // Chain 1 takes 2 descriptors: its used descriptor at 0 moves the driver to 2.
            ring.packedUsed(0, id: 1, length: 10)
            ring.packedUsed(2, id: 1, length: 10)
        case .usedLengthTooLarge: ring.packedUsed(0, id: 1, length: 65)
        case .usedLengthOnReadOnlyChain: ring.packedUsed(0, id: 0, length: 1)
        case .wrapBitsDisagree:
            // AVAIL 0 and USED 1: available for wrap counter 0, where the driver made chain 0
            // available with wrap counter 1.
            ring.packedUsed(0, id: 0, length: 0, flags: PackedRingFields.availableFlags(wrap: false))
        case .usedWithLastLapWrapCounter:
            ring.packedUsed(0, id: 0, length: 0, wrap: false)
        case .usedPositionPastWhatIsInFlight:
            ring.packedUsed(0, id: 0, length: 0)
            ring.packedUsed(1, id: 1, length: 0)
            ring.packedUsed(3, id: 0, length: 0)
        }
    }
}
