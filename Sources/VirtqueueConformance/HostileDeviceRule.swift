public import Virtqueue

/// Every driver-side rule of `docs/trust-model.md`, and how a hostile device breaks it: the one
/// table of hostile used rings, used by the conformance suite's ``ConformanceCheck/hostileDevice``
/// on every backend and by the ring core's own tests.
///
/// The driver, on a queue of ``queueSize`` entries with 256-byte buffers, has submitted chain 0
/// (one readable segment) and chain 1 (a readable and a 64-byte writable segment, descriptors 1
/// and 2) before the device plants anything; it then takes ``goodTakesBefore`` used chains
/// correctly and reports ``code`` on the next.
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

    /// The queue size the rules are written for.
    public static let queueSize = 8

    /// The violation the driver must report.
    public var code: VirtqueueError.Code {
        switch self {
        case .usedIndexJump, .usedIndexMovingBackwards: .usedIndexJump
        case .usedIDOutOfRange, .usedIDFarOutOfRange: .usedIDOutOfRange
        case .usedIDNeverSubmitted, .usedIDInsideAChain, .usedIDReturnedTwice: .usedIDNotInFlight
        case .usedLengthTooLarge, .usedLengthOnReadOnlyChain: .usedLengthTooLarge
        }
    }

    /// Used elements the driver takes, correctly, before the violation.
    public var goodTakesBefore: Int { self == .usedIDReturnedTwice ? 1 : 0 }

    /// Writes the rule's hostile used ring through `ring`.
    public func plant<Region: GuestMemory & ~Copyable>(_ ring: borrowing HostileRingWriter<Region>) {
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
            ring.usedElement(slot: 0, id: 1, length: 10)
            ring.usedElement(slot: 1, id: 1, length: 10)
            ring.usedIndex = 2
        case .usedLengthTooLarge:
            ring.usedElement(slot: 0, id: 1, length: 65)
            ring.usedIndex = 1
        case .usedLengthOnReadOnlyChain:
            ring.usedElement(slot: 0, id: 0, length: 1)
            ring.usedIndex = 1
        }
    }
}
