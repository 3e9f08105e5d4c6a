public import SystemPackage

/// An error from the vhost-user message layer: a message the peer sent that breaks the protocol,
/// a socket that failed or closed, or a caller mistake.
///
/// Every peer violation names the offending value in ``message``. A role that meets one refuses the
/// message (a REPLY_ACK with a non-zero status when the front-end asked for a reply) or closes the
/// connection; nothing in this layer traps on peer bytes. The code is an extensible struct, not a
/// closed enum (the pattern of swift-subprocess's `SubprocessError`).
public struct VhostUserError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, as a stable, comparable code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let rawValue: UInt16

        init(_ rawValue: UInt16) { self.rawValue = rawValue }

        // MARK: Caller mistakes

        /// An argument is out of range (a queue count, a file descriptor count, a payload too large to send).
        public static let invalidArgument = Code(1)

        // MARK: Peer violations: the header

        /// Fewer than 12 bytes where a header should be.
        public static let truncatedHeader = Code(20)
        /// The version bits (0–1 of `flags`) are not 1.
        public static let unsupportedVersion = Code(21)
        /// A flag bit the protocol does not define (bits 4–31) is set, or REPLY / NEED_REPLY is set
        /// where it has no meaning (REPLY on a request, NEED_REPLY on a reply, no REPLY on a reply).
        public static let invalidFlags = Code(22)
        /// The header's `size` is larger than the layer's payload bound (``VhostUserLimits/maxPayloadSize``).
        public static let payloadTooLarge = Code(23)
        /// The header's `size` differs from the number of payload bytes that came with it.
        public static let sizeMismatch = Code(24)

        // MARK: Peer violations: the payload

        /// The payload's size is not the one the request (or the reply) needs.
        public static let invalidPayloadSize = Code(40)
        /// The message carried a different number of file descriptors than it needs.
        public static let fileDescriptorCount = Code(41)
        /// A vring index is not below the number of queues.
        public static let queueIndexOutOfRange = Code(42)
        /// A field has bits set that the protocol reserves (a vring-file word above bit 8, vring
        /// address flags other than LOG, a device status above 8 bits).
        public static let reservedBits = Code(43)
        /// A field's value is outside the values the protocol allows (a queue size of 0 or above
        /// 32768, an enable flag that is not 0 or 1, …).
        public static let invalidValue = Code(44)
        /// A memory table with no regions, or with more than ``VhostUserLimits/maxMemoryRegions``.
        public static let regionCount = Code(45)
        /// A memory region of size 0, or whose guest-physical, user or mmap range overflows.
        public static let invalidRegion = Code(46)
        /// Two memory regions overlap in guest-physical or in user address space.
        public static let overlappingRegions = Code(47)
        /// A config-space access of size 0, past the config space, or with unknown flags.
        public static let invalidConfigAccess = Code(48)
        /// A reply answers a different request than the one sent.
        public static let unexpectedReply = Code(49)

        // MARK: The socket

        /// The peer closed the connection between messages.
        public static let peerClosed = Code(60)
        /// The peer closed the connection in the middle of a message.
        public static let truncatedMessage = Code(61)
        /// The peer sent more file descriptors with one message than the layer accepts
        /// (``VhostUserLimits/maxFileDescriptors``), or so many the kernel truncated them; all were closed.
        public static let tooManyFileDescriptors = Code(62)
        /// The peer did not send (or accept) a whole message in time.
        public static let timedOut = Code(63)
        /// A system call failed; ``VhostUserError/underlyingError`` says why.
        public static let systemCallFailed = Code(64)

        // MARK: Peer violations: the back-end role's rules

        /// A memory region reaches past the end of its file (`mmap_offset + size` above the size
        /// `fstat` reports), or its descriptor is not a regular file.
        public static let regionBeyondFile = Code(70)
        /// A ring address (SET_VRING_ADDR) is not inside any memory region's user address range.
        public static let unmappedRingAddress = Code(71)
        /// SET_FEATURES or SET_PROTOCOL_FEATURES sets a bit the back-end did not offer, or a request
        /// needs a protocol feature that was not negotiated.
        public static let featureNotOffered = Code(72)
        /// The request is not allowed in the session's present state (a SET_MEM_TABLE while a ring
        /// runs, a ring address before any memory table, a queue size change on a running ring, …).
        public static let invalidState = Code(73)
        /// The ring core refused the ring the messages describe (its placement, cursor or features);
        /// the message carries the core's reason.
        public static let invalidRing = Code(74)
        /// A request the back-end does not implement.
        public static let requestNotSupported = Code(75)
        /// The inflight area (SET_INFLIGHT_FD) is malformed: too small for its queues, or a
        /// queue's record names a head, size or version that does not fit the ring.
        public static let invalidInflightArea = Code(76)
        /// The back-end answered a request with a failed REPLY_ACK (the front-end role).
        public static let refusedByPeer = Code(77)

        // MARK: The back-end role, locally

        /// A ring's serving thread did not stop in time (a device stuck in `handle`, or a notify
        /// blocked by a hostile front-end; see `docs/vhost-user.md`).
        public static let ringDidNotStop = Code(80)
        /// The device could not be created, or its thread could not be started.
        public static let deviceFailed = Code(81)

        public var description: String {
            switch self {
            case .invalidArgument: "invalidArgument"
            case .truncatedHeader: "truncatedHeader"
            case .unsupportedVersion: "unsupportedVersion"
            case .invalidFlags: "invalidFlags"
            case .payloadTooLarge: "payloadTooLarge"
            case .sizeMismatch: "sizeMismatch"
            case .invalidPayloadSize: "invalidPayloadSize"
            case .fileDescriptorCount: "fileDescriptorCount"
            case .queueIndexOutOfRange: "queueIndexOutOfRange"
            case .reservedBits: "reservedBits"
            case .invalidValue: "invalidValue"
            case .regionCount: "regionCount"
            case .invalidRegion: "invalidRegion"
            case .overlappingRegions: "overlappingRegions"
            case .invalidConfigAccess: "invalidConfigAccess"
            case .unexpectedReply: "unexpectedReply"
            case .peerClosed: "peerClosed"
            case .truncatedMessage: "truncatedMessage"
            case .tooManyFileDescriptors: "tooManyFileDescriptors"
            case .timedOut: "timedOut"
            case .systemCallFailed: "systemCallFailed"
            case .regionBeyondFile: "regionBeyondFile"
            case .unmappedRingAddress: "unmappedRingAddress"
            case .featureNotOffered: "featureNotOffered"
            case .invalidState: "invalidState"
            case .invalidRing: "invalidRing"
            case .requestNotSupported: "requestNotSupported"
            case .invalidInflightArea: "invalidInflightArea"
            case .refusedByPeer: "refusedByPeer"
            case .ringDidNotStop: "ringDidNotStop"
            case .deviceFailed: "deviceFailed"
            default: "code(\(rawValue))"
            }
        }

        /// Whether this code describes something the peer sent (or did), rather than a caller
        /// mistake or a local system failure.
        public var isPeerViolation: Bool {
            (20..<64).contains(rawValue) || (70..<80).contains(rawValue)
        }
    }

    /// The code.
    public var code: Code
    /// A human-readable account that names the offending values.
    public var message: String
    /// For ``Code-swift.struct/systemCallFailed``: the operating system's error.
    public var underlyingError: Errno?

    /// Creates an error.
    public init(_ code: Code, _ message: String, underlyingError: Errno? = nil) {
        self.code = code
        self.message = message
        self.underlyingError = underlyingError
    }

    /// Whether this error is something the peer did rather than a caller mistake or a local failure.
    public var isPeerViolation: Bool { code.isPeerViolation }

    public var description: String {
        var text = "VhostUserError.\(code): \(message)"
        if let underlyingError { text += " (\(underlyingError))" }
        return text
    }

    static func system(_ call: String, _ error: Errno) -> VhostUserError {
        VhostUserError(.systemCallFailed, "\(call) failed", underlyingError: error)
    }
}
