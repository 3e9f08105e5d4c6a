public import Virtqueue

/// Every device-side rule of `docs/trust-model.md`, and how a hostile driver breaks it: the one
/// table of hostile chains, used by the conformance suite's ``ConformanceCheck/hostileDriver`` on
/// every backend and by the ring core's own tests.
///
/// Each rule plants its bad chain through a ``HostileRingWriter`` on a queue of
/// ``queueSize`` entries whose data area holds at least 4096 bytes; a device attached with
/// ``features`` (plus RING_PACKED on the packed ring) then reports ``code`` on its next
/// `nextRequest()`, after taking ``requestsBefore`` good requests and holding them.
///
/// One table for both ring formats: a rule states its violation once, and plants it in the
/// format of the writer's layout — on the packed ring, a list made available with wrap counter 1
/// from position 0, its buffer ID on the last descriptor. Some rules exist in one format only
/// (``formats``; ``cases(for:)`` lists a format's): the split ring's index and `next` links, the
/// packed ring's wrap counters and lists.
public enum HostileDriverRule: String, CaseIterable, Sendable {
    case availableIndexJump
    case headOutOfRange
    case nextOutOfRange
    case descriptorLoop
    case descriptorSelfLoop
    case chainLongerThanQueueThroughIndirectTable
    case chainLongerThanQueueMixingDirectAndIndirect
    case addressPlusLengthOverflows
    case bufferOutsideTheRegion
    case bufferRunningPastTheRegionEnd
    case bufferOverTheRings
    case writableBeforeReadable
    case writableBeforeReadableInIndirectTable
    case nestedIndirectTable
    case indirectLengthNotMultipleOf16
    case indirectLengthZero
    case indirectTableOutsideTheRegion
    case indirectTableAddressOverflows
    case indirectTogetherWithNext
    case indirectNotNegotiated
    case loopInsideIndirectTable
    case nextOutsideIndirectTable
    case headMadeAvailableTwice
    case listLongerThanQueue
    case listWithoutEnd
    case listRunningIntoLastLap
    case usedFlagsAtTheDevicePosition
    case indirectInsideAList

    /// The ring formats the rule exists in.
    public var formats: Set<RingFormat> {
        switch self {
        case .availableIndexJump, .nextOutOfRange, .descriptorLoop, .descriptorSelfLoop,
            .chainLongerThanQueueMixingDirectAndIndirect, .loopInsideIndirectTable, .nextOutsideIndirectTable:
            [.split]
        case .listLongerThanQueue, .listWithoutEnd, .listRunningIntoLastLap, .usedFlagsAtTheDevicePosition,
            .indirectInsideAList:
            [.packed]
        default: [.split, .packed]
        }
    }

    /// The rules of ring format `format`.
    public static func cases(for format: RingFormat) -> [Self] {
        allCases.filter { $0.formats.contains(format) }
    }

    /// The queue size the rules are written for.
    public static let queueSize = 8

    /// The violation the device must report.
    public var code: VirtqueueError.Code {
        switch self {
        case .availableIndexJump: .availableIndexJump
        case .headOutOfRange: .headOutOfRange
        case .nextOutOfRange, .nextOutsideIndirectTable: .nextOutOfRange
        case .descriptorLoop, .descriptorSelfLoop, .loopInsideIndirectTable: .descriptorLoop
        case .chainLongerThanQueueThroughIndirectTable, .chainLongerThanQueueMixingDirectAndIndirect:
            .peerChainTooLong
        case .addressPlusLengthOverflows, .bufferOutsideTheRegion, .bufferRunningPastTheRegionEnd,
            .bufferOverTheRings:
            .bufferOutOfRange
        case .writableBeforeReadable, .writableBeforeReadableInIndirectTable: .writableBeforeReadable
        case .nestedIndirectTable: .nestedIndirect
        case .indirectLengthNotMultipleOf16, .indirectLengthZero: .indirectLengthInvalid
        case .indirectTableOutsideTheRegion, .indirectTableAddressOverflows: .indirectOutOfRange
        case .indirectTogetherWithNext: .indirectWithNext
        case .indirectNotNegotiated: .indirectNotNegotiated
        case .headMadeAvailableTwice: .headAlreadyInFlight
        case .listLongerThanQueue: .peerChainTooLong
        case .listWithoutEnd, .listRunningIntoLastLap: .descriptorNotAvailable
        case .usedFlagsAtTheDevicePosition: .wrapCounterMismatch
        case .indirectInsideAList: .indirectWithNext
        }
    }

    /// The features the layout and the device use.
    public var features: Features { self == .indirectNotNegotiated ? [.eventIndex] : .all }

    /// Requests the device takes, correctly, before the violation (and holds).
    public var requestsBefore: Int { self == .headMadeAvailableTwice ? 1 : 0 }

    /// Writes the rule's hostile chain (and makes it available) through `ring`, in the ring
    /// format of its layout. A rule of the other format only (``formats``) writes nothing.
    public func plant<Region: GuestMemory & ~Copyable>(_ ring: borrowing HostileRingWriter<Region>) {
        let format = ring.layout.format
        guard formats.contains(format) else { return }
        if format == .packed {
            plantPacked(ring)
            return
        }
        let size = Self.queueSize
        let next = SplitRingFields.nextFlag
        let write = SplitRingFields.writeFlag
        let indirect = SplitRingFields.indirectFlag
        let table = Int(ring.data(1024))
        switch self {
        case .availableIndexJump:
            ring.descriptor(0, address: ring.data(0), length: 16)
            ring.availableIndex = UInt16(size + 1)
            return
        case .headOutOfRange:
            ring.makeAvailable(head: UInt16(size), slot: 0)
            ring.availableIndex = 1
            return
        case .nextOutOfRange:
            ring.descriptor(0, address: ring.data(0), length: 16, flags: next, next: UInt16(size))
        case .descriptorLoop:
            ring.descriptor(0, address: ring.data(0), length: 16, flags: next, next: 1)
            ring.descriptor(1, address: ring.data(16), length: 16, flags: next, next: 0)
        case .descriptorSelfLoop:
            ring.descriptor(3, address: ring.data(0), length: 16, flags: next, next: 3)
            ring.makeAvailable(head: 3, slot: 0)
            ring.availableIndex = 1
            return
        case .chainLongerThanQueueThroughIndirectTable:
            let count = size + 1
            for entry in 0..<count {
                let last = entry == count - 1
                ring.descriptor(
                    at: table + 16 * entry,
                    address: ring.data(16 * entry),
                    length: 16,
                    flags: last ? 0 : next,
                    next: last ? 0 : UInt16(entry + 1)
                )
            }
            ring.descriptor(0, address: ring.data(1024), length: UInt32(16 * count), flags: indirect)
        case .chainLongerThanQueueMixingDirectAndIndirect:
            for index in 0..<4 {
                ring.descriptor(
                    index,
                    address: ring.data(16 * index),
                    length: 16,
                    flags: next,
                    next: UInt16(index + 1)
                )
            }
            let count = size - 3
            for entry in 0..<count {
                let last = entry == count - 1
                ring.descriptor(
                    at: table + 16 * entry,
                    address: ring.data(512),
                    length: 8,
                    flags: last ? 0 : next,
                    next: last ? 0 : UInt16(entry + 1)
                )
            }
            ring.descriptor(4, address: ring.data(1024), length: UInt32(16 * count), flags: indirect)
        case .addressPlusLengthOverflows:
            ring.descriptor(0, address: UInt64.max - 8, length: 64)
        case .bufferOutsideTheRegion:
            ring.descriptor(0, address: UInt64(ring.layout.regionSize + 64), length: 16)
        case .bufferRunningPastTheRegionEnd:
            ring.descriptor(0, address: UInt64(ring.layout.regionSize - 8), length: 16, flags: write)
        case .bufferOverTheRings:
            ring.descriptor(0, address: UInt64(ring.queue.usedRingOffset), length: 16, flags: write)
        case .writableBeforeReadable:
            ring.descriptor(0, address: ring.data(0), length: 16, flags: write | next, next: 1)
            ring.descriptor(1, address: ring.data(16), length: 16)
        case .writableBeforeReadableInIndirectTable:
            ring.descriptor(at: table, address: ring.data(0), length: 16, flags: write | next, next: 1)
            ring.descriptor(at: table + 16, address: ring.data(16), length: 16)
            ring.descriptor(0, address: ring.data(1024), length: 32, flags: indirect)
        case .nestedIndirectTable:
            ring.descriptor(at: table, address: ring.data(2048), length: 16, flags: indirect)
            ring.descriptor(0, address: ring.data(1024), length: 16, flags: indirect)
        case .indirectLengthNotMultipleOf16:
            ring.descriptor(0, address: ring.data(1024), length: 24, flags: indirect)
        case .indirectLengthZero:
            ring.descriptor(0, address: ring.data(1024), length: 0, flags: indirect)
        case .indirectTableOutsideTheRegion:
            ring.descriptor(0, address: UInt64(ring.layout.regionSize - 16), length: 64, flags: indirect)
        case .indirectTableAddressOverflows:
            ring.descriptor(0, address: UInt64.max - 15, length: 32, flags: indirect)
        case .indirectTogetherWithNext:
            ring.descriptor(at: table, address: ring.data(0), length: 16)
            ring.descriptor(0, address: ring.data(1024), length: 16, flags: indirect | next, next: 1)
            ring.descriptor(1, address: ring.data(16), length: 16)
        case .indirectNotNegotiated:
            ring.descriptor(at: table, address: ring.data(0), length: 16)
            ring.descriptor(0, address: ring.data(1024), length: 16, flags: indirect)
        case .loopInsideIndirectTable:
            ring.descriptor(at: table, address: ring.data(0), length: 16, flags: next, next: 1)
            ring.descriptor(at: table + 16, address: ring.data(16), length: 16, flags: next, next: 0)
            ring.descriptor(0, address: ring.data(1024), length: 32, flags: indirect)
        case .nextOutsideIndirectTable:
            ring.descriptor(at: table, address: ring.data(0), length: 16, flags: next, next: 2)
            ring.descriptor(at: table + 16, address: ring.data(16), length: 16)
            ring.descriptor(0, address: ring.data(1024), length: 32, flags: indirect)
        case .headMadeAvailableTwice:
            ring.descriptor(0, address: ring.data(0), length: 16)
            ring.makeAvailable(head: 0, slot: 0)
            ring.makeAvailable(head: 0, slot: 1)
            ring.availableIndex = 2
            return
        case .listLongerThanQueue, .listWithoutEnd, .listRunningIntoLastLap, .usedFlagsAtTheDevicePosition,
            .indirectInsideAList:
            return
        }
        // Most rules plant a bad chain at head 0 and make it available.
        ring.makeAvailable(head: 0, slot: 0)
        ring.availableIndex = 1
    }
}
