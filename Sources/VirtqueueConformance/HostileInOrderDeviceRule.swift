public import Virtqueue

/// The driver-side rules VIRTIO_F_IN_ORDER adds to `docs/trust-model.md`, and how a hostile device
/// breaks each: the one table of hostile in-order used rings, used by the conformance suite's
/// ``ConformanceCheck/hostileDevice`` on every backend and by the ring core's own tests.
///
/// The driver, on a queue of ``queueSize`` entries with 256-byte buffers and ``features``, has
/// submitted (``submitChains(to:)``) chain 0 (one readable segment, descriptor 0), chain 1 (a
/// readable and a 64-byte writable segment, descriptors 1 and 2) and chain 3 (a 32-byte writable
/// segment, descriptor 3) before the device plants anything; it then takes ``goodTakes`` used
/// chains correctly and reports ``code`` on the next.
public enum HostileInOrderDeviceRule: String, CaseIterable, Sendable {
    /// Chain 1 returned alone, before chain 0.
    case usedOutOfOrder
    /// Chain 3 named with `used.idx` covering two buffers: it skips chain 1 without covering it.
    case usedSkipsAChainInFlight
    /// `used.idx` moved by four with three chains in flight.
    case usedPastInFlight
    /// A batch of two named by chain 1, `used.idx` moved by three, and the third element left
    /// naming chain 1 again: the index claims a buffer the elements do not name.
    case batchShorterThanIndex
    /// An element names a head never submitted.
    case usedIDNeverSubmitted
    /// An element names a descriptor inside chain 1.
    case usedIDInsideAChain
    /// An element names a head past the queue.
    case usedIDOutOfRange
    /// A batch's element gives its last chain more bytes than it can hold.
    case batchLengthTooLarge
    /// `used.idx` jumps past the queue size.
    case usedIndexJump

    /// The queue size the rules are written for.
    public static let queueSize = 8
    /// The features the rules are written for.
    public static let features: Features = [.inOrder, .indirectDescriptors, .eventIndex]
    /// The chains ``submitChains(to:)`` submits.
    public static let chainCount = 3

    /// The violation the driver must report.
    public var code: VirtqueueError.Code {
        switch self {
        case .usedOutOfOrder, .usedSkipsAChainInFlight: .usedOutOfOrder
        case .usedPastInFlight: .usedPastInFlight
        case .batchShorterThanIndex, .usedIDNeverSubmitted, .usedIDInsideAChain: .usedIDNotInFlight
        case .usedIDOutOfRange: .usedIDOutOfRange
        case .batchLengthTooLarge: .usedLengthTooLarge
        case .usedIndexJump: .usedIndexJump
        }
    }

    /// The used chains (id, written bytes) the driver takes, correctly, before the violation.
    public var goodTakes: [(id: UInt16, written: Int)] {
        self == .batchShorterThanIndex ? [(0, 0), (1, 10)] : []
    }

    /// Submits the rules' three chains (heads 0, 1 and 3).
    ///
    /// - Throws: What the driver throws, or a ``ConformanceFailure``-style error if the heads differ.
    public func submitChains<Region: GuestMemory & ~Copyable, Notify: Notifier>(
        to driver: inout DriverQueue<Region, Notify>
    ) throws {
        var first = driver.makeChain()
        try driver.appendReadable(to: &first, copying: [1, 2, 3])
        var ids = [try driver.submit(first)]
        var second = driver.makeChain()
        try driver.appendReadable(to: &second, copying: [4, 5, 6])
        try driver.appendWritable(to: &second, capacity: 64)
        ids.append(try driver.submit(second))
        var third = driver.makeChain()
        try driver.appendWritable(to: &third, capacity: 32)
        ids.append(try driver.submit(third))
        guard ids == [0, 1, 3] else {
            throw VirtqueueError(
                .invalidConfiguration,
                "rule \(self): the in-order driver gave its chains ids \(ids); the planted ring expects 0, 1 and 3"
            )
        }
    }

    /// Writes the rule's hostile used ring through `ring`.
    public func plant<Region: GuestMemory & ~Copyable>(_ ring: borrowing HostileRingWriter<Region>) {
        switch self {
        case .usedOutOfOrder:
            ring.usedElement(slot: 0, id: 1, length: 10)
            ring.usedIndex = 1
        case .usedSkipsAChainInFlight:
            ring.usedElement(slot: 0, id: 3, length: 0)
            ring.usedIndex = 2
        case .usedPastInFlight:
            ring.usedElement(slot: 0, id: 3, length: 0)
            ring.usedIndex = 4
        case .batchShorterThanIndex:
            ring.usedElement(slot: 0, id: 1, length: 10)
            ring.usedElement(slot: 2, id: 1, length: 10)
            ring.usedIndex = 3
        case .usedIDNeverSubmitted:
            ring.usedElement(slot: 0, id: 5, length: 0)
            ring.usedIndex = 1
        case .usedIDInsideAChain:
            ring.usedElement(slot: 0, id: 2, length: 0)
            ring.usedIndex = 1
        case .usedIDOutOfRange:
            ring.usedElement(slot: 0, id: UInt32(Self.queueSize), length: 0)
            ring.usedIndex = 1
        case .batchLengthTooLarge:
            ring.usedElement(slot: 0, id: 1, length: 65)
            ring.usedIndex = 2
        case .usedIndexJump:
            ring.usedElement(slot: 0, id: 0, length: 0)
            ring.usedIndex = UInt16(Self.queueSize + 1)
        }
    }
}
