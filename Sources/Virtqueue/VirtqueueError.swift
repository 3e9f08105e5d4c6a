/// An error from a virtqueue, its region or its notifier.
///
/// Errors fall into two families, told apart by ``isPeerViolation``:
///
/// - **Caller mistakes** (a queue size that is not a power of two, a payload larger than its
///   buffer, an exhausted pool) leave the queue usable; fix the call and try again.
/// - **Peer violations** (anything the other side wrote into shared memory that breaks the
///   rules of `docs/trust-model.md`) break the queue for good. Every later call reports
///   ``Code-swift.struct/queueBroken``, and the driver can take back every chain it still had in flight.
///
/// The error is a struct with an extensible ``Code-swift.struct`` rather than a closed enum, so new
/// codes can be added without breaking clients (the pattern of swift-subprocess's `SubprocessError`).
public struct VirtqueueError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, as a stable, comparable code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        @usableFromInline
        internal let rawValue: UInt16

        @usableFromInline
        internal init(_ rawValue: UInt16) { self.rawValue = rawValue }

        // MARK: Caller mistakes: layout and configuration

        /// The queue size is zero, not a power of two, or larger than 32768.
        public static let invalidQueueSize = Code(1)
        /// The region is smaller than the layout needs.
        public static let regionTooSmall = Code(2)
        /// A value that must be aligned is not.
        public static let misaligned = Code(3)
        /// A configuration value is out of its allowed range.
        public static let invalidConfiguration = Code(4)
        /// A feature was requested that the other side, or this library, does not support.
        public static let featureNotSupported = Code(5)
        /// A queue placement does not fit: an area outside memory, areas that overlap, an unknown
        /// ring format, or a cursor that does not fit the ring.
        public static let invalidPlacement = Code(6)
        /// A bus address (with its length) lies in a gap between mappings, runs past the end of
        /// its mapping, or overflows 2^64.
        public static let addressOutOfRange = Code(7)

        // MARK: Caller mistakes: using a queue

        /// Every buffer of the driver's pool is in use.
        public static let poolExhausted = Code(20)
        /// Every descriptor of the ring is in use.
        public static let ringFull = Code(21)
        /// The chain would be longer than the queue allows.
        public static let chainTooLong = Code(22)
        /// A payload is larger than the buffer that should hold it.
        public static let payloadTooLarge = Code(23)
        /// A device-readable segment was appended after a device-writable one.
        public static let readableAfterWritable = Code(24)
        /// A chain with no segments was submitted.
        public static let emptyChain = Code(25)
        /// A chain, request or used chain was passed to a queue other than the one that made it
        /// (<doc:TrustModel#A-token-belongs-to-its-queue>). A caller error: no queue breaks.
        public static let notOwned = Code(26)
        /// The device reported more written bytes than the request's writable segments hold.
        public static let writtenLengthTooLarge = Code(27)
        /// The device holds so many segments of taken requests that its private store is full.
        public static let segmentStoreExhausted = Code(28)
        /// The queue broke earlier; the error names the first violation.
        public static let queueBroken = Code(29)
        /// The queue index is not one of the region's queues.
        public static let noSuchQueue = Code(30)
        /// The queue was stopped (``DeviceQueue/stop()``); build a new one from its cursor.
        public static let queueStopped = Code(31)
        /// The queue cannot stop while it holds requests that were taken and not completed.
        public static let requestsOutstanding = Code(32)
        /// Under VIRTIO_F_IN_ORDER, a chain was begun while another one was being built: an
        /// in-order driver builds one chain at a time, so that each takes the descriptors after
        /// the last one's (<doc:TrustModel#IN_ORDER>).
        public static let chainInProgress = Code(33)

        // MARK: Peer violations: region header

        /// The region header is malformed (magic, version, sizes or offsets).
        public static let invalidHeader = Code(40)

        // MARK: Peer violations: device side (the driver wrote something wrong)

        /// `avail.idx` moved more than the queue size past the last index the device saw; on the
        /// packed ring, a list reaching more than the queue size past the device's used position
        /// (over descriptors still in flight).
        public static let availableIndexJump = Code(50)
        /// An available-ring entry names a descriptor head ≥ the queue size.
        public static let headOutOfRange = Code(51)
        /// A descriptor's `next` is ≥ the queue size (or ≥ the indirect table's length).
        public static let nextOutOfRange = Code(52)
        /// Following `next` revisits a descriptor.
        public static let descriptorLoop = Code(53)
        /// The chain has more descriptors than the queue size.
        public static let peerChainTooLong = Code(54)
        /// A buffer's `addr + len` overflows, lies in a gap between mappings, runs past the end of
        /// its mapping, or lies outside the placement's buffer area (a region's data area).
        public static let bufferOutOfRange = Code(55)
        /// A device-writable descriptor comes before a device-readable one.
        public static let writableBeforeReadable = Code(56)
        /// An indirect table contains an indirect descriptor.
        public static let nestedIndirect = Code(57)
        /// An indirect table's length is zero or not a multiple of 16.
        public static let indirectLengthInvalid = Code(58)
        /// An indirect table lies outside the buffer area, or spans two mappings.
        public static let indirectOutOfRange = Code(59)
        /// A descriptor has both INDIRECT and NEXT set.
        public static let indirectWithNext = Code(60)
        /// A descriptor is INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated.
        public static let indirectNotNegotiated = Code(61)
        /// The driver made a head available again while the device still held it.
        public static let headAlreadyInFlight = Code(62)
        /// A resuming device was asked to take again more chains than its cursor has in flight
        /// (``DeviceQueue/resubmittedRequest(head:)``).
        public static let tooManyResubmitted = Code(63)
        /// Packed ring: a descriptor's `NEXT` leads to one that is not available for the wrap
        /// counter at its position — the list has no end — or a list holds an INDIRECT
        /// descriptor after its first.
        public static let descriptorNotAvailable = Code(68)

        // MARK: Peer violations: driver side (the device wrote something wrong)

        /// `used.idx` moved more than the queue size past the last index the driver saw.
        public static let usedIndexJump = Code(70)
        /// A used element's id is ≥ the queue size.
        public static let usedIDOutOfRange = Code(71)
        /// A used element names a chain that is not in flight (never submitted, or returned twice).
        public static let usedIDNotInFlight = Code(72)
        /// A used element's length is larger than the chain's writable bytes.
        public static let usedLengthTooLarge = Code(73)
        /// Packed ring (either side): a descriptor's `AVAIL` and `USED` bits are in a state no
        /// legal ring holds at this side's position — the peer's wrap counter disagrees with ours.
        public static let wrapCounterMismatch = Code(78)
        /// Under VIRTIO_F_IN_ORDER, a used element names a chain made available after chains
        /// still in flight that `used.idx` does not cover: the device used buffers out of order.
        public static let usedOutOfOrder = Code(74)
        /// Under VIRTIO_F_IN_ORDER, `used.idx` moved past the chains in flight: it reports more
        /// buffers used than the driver made available and has not taken back.
        public static let usedPastInFlight = Code(75)

        // MARK: Notification and peer liveness

        /// The peer has died or closed its end.
        public static let peerDied = Code(90)
        /// A notifier operation failed in the operating system.
        public static let notifierFailed = Code(91)

        public var description: String {
            switch self {
            case .invalidQueueSize: "invalidQueueSize"
            case .regionTooSmall: "regionTooSmall"
            case .misaligned: "misaligned"
            case .invalidConfiguration: "invalidConfiguration"
            case .featureNotSupported: "featureNotSupported"
            case .invalidPlacement: "invalidPlacement"
            case .addressOutOfRange: "addressOutOfRange"
            case .poolExhausted: "poolExhausted"
            case .ringFull: "ringFull"
            case .chainTooLong: "chainTooLong"
            case .payloadTooLarge: "payloadTooLarge"
            case .readableAfterWritable: "readableAfterWritable"
            case .emptyChain: "emptyChain"
            case .notOwned: "notOwned"
            case .writtenLengthTooLarge: "writtenLengthTooLarge"
            case .segmentStoreExhausted: "segmentStoreExhausted"
            case .queueBroken: "queueBroken"
            case .noSuchQueue: "noSuchQueue"
            case .queueStopped: "queueStopped"
            case .requestsOutstanding: "requestsOutstanding"
            case .chainInProgress: "chainInProgress"
            case .invalidHeader: "invalidHeader"
            case .availableIndexJump: "availableIndexJump"
            case .headOutOfRange: "headOutOfRange"
            case .nextOutOfRange: "nextOutOfRange"
            case .descriptorLoop: "descriptorLoop"
            case .peerChainTooLong: "peerChainTooLong"
            case .bufferOutOfRange: "bufferOutOfRange"
            case .writableBeforeReadable: "writableBeforeReadable"
            case .nestedIndirect: "nestedIndirect"
            case .indirectLengthInvalid: "indirectLengthInvalid"
            case .indirectOutOfRange: "indirectOutOfRange"
            case .indirectWithNext: "indirectWithNext"
            case .indirectNotNegotiated: "indirectNotNegotiated"
            case .headAlreadyInFlight: "headAlreadyInFlight"
            case .tooManyResubmitted: "tooManyResubmitted"
            case .usedIndexJump: "usedIndexJump"
            case .usedIDOutOfRange: "usedIDOutOfRange"
            case .usedIDNotInFlight: "usedIDNotInFlight"
            case .usedLengthTooLarge: "usedLengthTooLarge"
            case .descriptorNotAvailable: "descriptorNotAvailable"
            case .wrapCounterMismatch: "wrapCounterMismatch"
            case .usedOutOfOrder: "usedOutOfOrder"
            case .usedPastInFlight: "usedPastInFlight"
            case .peerDied: "peerDied"
            case .notifierFailed: "notifierFailed"
            default: "code(\(rawValue))"
            }
        }

        /// Whether this code describes something the peer wrote, which breaks the queue.
        public var isPeerViolation: Bool {
            (40..<90).contains(rawValue) || self == .peerDied
        }
    }

    /// The code.
    public var code: Code
    /// A human-readable account that names the offending values (for
    /// ``Code-swift.struct/queueBroken``, the account of the violation that broke the queue).
    public var message: String
    /// For notifier failures, the operating system's `errno`; for
    /// ``Code-swift.struct/queueBroken``, that of the violation that broke the queue, if it had one.
    public var underlyingErrno: Int32?
    /// For ``Code-swift.struct/queueBroken``: the code of the violation that broke the queue.
    public var cause: Code?

    /// Creates an error.
    public init(_ code: Code, _ message: String, underlyingErrno: Int32? = nil, cause: Code? = nil) {
        self.code = code
        self.message = message
        self.underlyingErrno = underlyingErrno
        self.cause = cause
    }

    /// Whether this error is a peer violation (which breaks the queue) rather than a caller mistake.
    public var isPeerViolation: Bool { code.isPeerViolation }

    public var description: String {
        var text = "VirtqueueError.\(code)"
        if let cause { text += " (by \(cause))" }
        text += ": \(message)"
        if let underlyingErrno { text += " (errno \(underlyingErrno))" }
        return text
    }

    /// The error every call on a broken queue reports, wrapping the violation that broke it: its
    /// code as ``cause``, its message and `errno` as they are.
    ///
    /// Nothing is formatted here: a peer that breaks the queue and goes on calling (every fuzz
    /// input that breaks one does) paid for a new message on each call, the largest cost of the
    /// fuzz targets' executions. ``description`` puts the cause beside the code instead.
    @usableFromInline @inline(never)
    internal static func broken(by violation: VirtqueueError) -> VirtqueueError {
        if violation.code == .queueStopped { return violation }
        return VirtqueueError(
            .queueBroken,
            violation.message,
            underlyingErrno: violation.underlyingErrno,
            cause: violation.code
        )
    }
}
