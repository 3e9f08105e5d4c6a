public import Virtqueue

/// The driver-side rules VIRTIO_F_IN_ORDER adds to `docs/trust-model.md`, and how a hostile device
/// breaks each: the one table of hostile in-order used rings, used by the conformance suite's
/// ``ConformanceCheck/hostileDevice`` on every backend and by the ring core's own tests. The
/// rules of the usual table (``HostileDeviceRule``) hold under IN_ORDER too, and are run under
/// it as well; this table has only what IN_ORDER adds.
///
/// The driver, on a queue of ``queueSize`` entries with 256-byte buffers and ``features`` (plus
/// RING_PACKED on the packed ring), has submitted (``submitChains(to:)``) chain 0 (one readable
/// segment, descriptor 0), chain 1 (a readable and a 64-byte writable segment, descriptors 1
/// and 2) and chain 3 (a 32-byte writable segment, descriptor 3) before the device plants
/// anything — on the packed ring at positions 0, 1–2 and 3 with wrap counter 1, buffer IDs
/// being ring indices; it then takes ``goodTakes`` used chains correctly and reports ``code``
/// on the next.
///
/// Some rules exist in one format only (``formats``; ``cases(for:)`` lists a format's): the
/// split ring's `used.idx` says how many buffers a batch holds, so naming a later chain can be
/// out of order there; on the packed ring a used descriptor at the driver's position naming any
/// chain made available is a batch, and what can be wrong is the batch itself.
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
    /// Packed: a used descriptor names chain 3, which the driver staged and has not made
    /// available: the batch reaches descriptors the device cannot have seen.
    case batchReachesAStagedChain
    /// Packed: a valid batch of chains 0 and 1 moves the driver past their three descriptors,
    /// to chain 3's, where a used descriptor carries the last lap's wrap counter.
    case usedAfterBatchWithLastLapWrapCounter

    /// The queue size the rules are written for.
    public static let queueSize = 8
    /// The features the rules are written for (plus RING_PACKED for the packed ring).
    public static let features: Features = [.inOrder, .indirectDescriptors, .eventIndex]
    /// The chains ``submitChains(to:)`` submits.
    public static let chainCount = 3

    /// The ring formats the rule exists in.
    public var formats: Set<RingFormat> {
        switch self {
        case .usedOutOfOrder, .usedSkipsAChainInFlight, .usedPastInFlight, .batchShorterThanIndex: [.split]
        case .batchReachesAStagedChain, .usedAfterBatchWithLastLapWrapCounter: [.packed]
        }
    }

    /// The rules of ring format `format`.
    public static func cases(for format: RingFormat) -> [Self] {
        allCases.filter { $0.formats.contains(format) }
    }

    /// The violation the driver must report.
    public var code: VirtqueueError.Code {
        switch self {
        case .usedOutOfOrder, .usedSkipsAChainInFlight: .usedOutOfOrder
        case .usedPastInFlight, .batchReachesAStagedChain: .usedPastInFlight
        case .batchShorterThanIndex: .usedIDNotInFlight
        case .usedAfterBatchWithLastLapWrapCounter: .wrapCounterMismatch
        }
    }

    /// The used chains (id, written bytes) the driver takes, correctly, before the violation.
    public var goodTakes: [(id: UInt16, written: Int)] {
        switch self {
        case .batchShorterThanIndex, .usedAfterBatchWithLastLapWrapCounter: [(0, 0), (1, 10)]
        default: []
        }
    }

    /// Submits the rules' three chains (heads 0, 1 and 3); the third staged, not published,
    /// for ``batchReachesAStagedChain``.
    ///
    /// - Throws: What the driver throws, or `VirtqueueError.Code.invalidConfiguration`
    ///   if the heads differ.
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
        ids.append(try driver.submit(third, publish: self != .batchReachesAStagedChain))
        guard ids == [0, 1, 3] else {
            throw VirtqueueError(
                .invalidConfiguration,
                "rule \(self): the in-order driver gave its chains ids \(ids); the planted ring expects 0, 1 and 3"
            )
        }
    }

    /// Writes the rule's hostile used ring through `ring`, in the ring format of its layout. A
    /// rule of the other format only (``formats``) writes nothing.
    public func plant<Region: GuestMemory & ~Copyable>(_ ring: borrowing HostileRingWriter<Region>) {
        let format = ring.layout.format
        guard formats.contains(format) else { return }
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
        case .batchReachesAStagedChain:
            ring.packedUsed(0, id: 3, length: 0)
        case .usedAfterBatchWithLastLapWrapCounter:
            ring.packedUsed(0, id: 1, length: 10)
            ring.packedUsed(3, id: 3, length: 0, wrap: false)
        }
    }
}
