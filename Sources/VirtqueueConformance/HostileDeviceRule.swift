public import Virtqueue

/// Every driver-side rule of `docs/trust-model.md`, and how a hostile device breaks it: the one
/// table of hostile used rings, used by the conformance suite's ``ConformanceCheck/hostileDevice``
/// on every backend and by the ring core's own tests.
///
/// The driver, on a queue of ``queueSize`` entries with 256-byte buffers, has submitted chain 0
/// (one readable segment) and chain 1 (a readable and a 64-byte writable segment, descriptors 1
/// and 2) before the device plants anything; it then takes ``goodTakesBefore`` used chains
/// correctly and reports ``code`` on the next.
///
/// One table for both ring formats: a rule states its violation once, and plants it in the
/// format of the writer's layout — on the packed ring, chain 0 at position 0 and chain 1 at
/// positions 1 and 2, made available with wrap counter 1. Some rules exist in one format only
/// (``formats``; ``cases(for:)`` lists a format's): the split ring's `used.idx`, the packed
/// ring's wrap counters.
///
/// Every rule holds with VIRTIO_F_IN_ORDER negotiated as well, where the driver reads the used
/// ring as batches, and is run that way too: what IN_ORDER adds is ``HostileInOrderDeviceRule``'s.
public enum HostileDeviceRule: String, CaseIterable, Sendable {
    case usedIndexJump
    case usedIndexMovingBackwards
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

    /// The ring formats the rule exists in.
    public var formats: Set<RingFormat> {
        switch self {
        case .usedIndexJump, .usedIndexMovingBackwards: [.split]
        case .wrapBitsDisagree, .usedWithLastLapWrapCounter, .usedPositionPastWhatIsInFlight: [.packed]
        default: [.split, .packed]
        }
    }

    /// The rules of ring format `format`.
    public static func cases(for format: RingFormat) -> [Self] {
        allCases.filter { $0.formats.contains(format) }
    }

    /// The queue size the rules are written for.
    public static let queueSize = 8

    /// The violation the driver must report.
    public var code: VirtqueueError.Code {
        switch self {
        case .usedIndexJump, .usedIndexMovingBackwards: .usedIndexJump
        case .usedIDOutOfRange, .usedIDFarOutOfRange: .usedIDOutOfRange
        case .usedIDNeverSubmitted, .usedIDInsideAChain, .usedIDReturnedTwice: .usedIDNotInFlight
        case .usedLengthTooLarge, .usedLengthOnReadOnlyChain: .usedLengthTooLarge
        case .wrapBitsDisagree, .usedWithLastLapWrapCounter: .wrapCounterMismatch
        case .usedPositionPastWhatIsInFlight: .usedIndexJump
        }
    }

    /// Used elements the driver takes, correctly, before the violation.
    public var goodTakesBefore: Int {
        switch self {
        case .usedIDReturnedTwice: 1
        case .usedPositionPastWhatIsInFlight: 2
        default: 0
        }
    }

    /// Writes the rule's hostile used ring through `ring`, in the ring format of its layout. A
    /// rule of the other format only (``formats``) writes nothing.
    public func plant<Region: GuestMemory & ~Copyable>(_ ring: borrowing HostileRingWriter<Region>) {
        let format = ring.layout.format
        guard formats.contains(format) else { return }
        if format == .packed {
            plantPacked(ring)
            return
        }
        let size = Self.queueSize
        switch self {
        case .usedIndexJump:
            ring.usedElement(slot: 0, id: 0, length: 0)
            ring.usedIndex = UInt16(size + 1)
        case .usedIndexMovingBackwards:
            ring.usedIndex = UInt16.max
        case .usedIDOutOfRange:
            ring.usedElement(slot: 0, id: UInt32(size), length: 0)
            ring.usedIndex = 1
        case .usedIDFarOutOfRange:
            ring.usedElement(slot: 0, id: UInt32.max, length: 0)
            ring.usedIndex = 1
        case .usedIDNeverSubmitted:
            ring.usedElement(slot: 0, id: 5, length: 0)
            ring.usedIndex = 1
        case .usedIDInsideAChain:
            ring.usedElement(slot: 0, id: 2, length: 0)
            ring.usedIndex = 1
        case .usedIDReturnedTwice:
            ring.usedElement(slot: 0, id: 0, length: 0)
            ring.usedElement(slot: 1, id: 0, length: 0)
            ring.usedIndex = 2
        case .usedLengthTooLarge:
            // `used.idx` covers chain 1's place among the chains in flight, so that the length
            // is the violation under IN_ORDER too (a batch of chains 0 and 1).
            ring.usedElement(slot: 0, id: 1, length: 65)
            ring.usedIndex = 2
        case .usedLengthOnReadOnlyChain:
            ring.usedElement(slot: 0, id: 0, length: 1)
            ring.usedIndex = 1
        case .wrapBitsDisagree, .usedWithLastLapWrapCounter, .usedPositionPastWhatIsInFlight:
            return
        }
    }
}
