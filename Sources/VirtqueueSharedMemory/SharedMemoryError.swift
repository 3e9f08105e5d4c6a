public import SystemPackage
public import Virtqueue

/// An error from the shared-memory backend: creating or attaching a region, launching a device
/// process, or the socket handshake.
///
/// Errors from the ring itself (`VirtqueueError`) stay what they are; when a region is refused
/// because its header is malformed, ``virtqueueError`` carries the core's account of it. The code
/// is an extensible struct, not a closed enum (the pattern of swift-subprocess's `SubprocessError`).
public struct SharedMemoryError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, as a stable, comparable code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let rawValue: UInt16

        init(_ rawValue: UInt16) { self.rawValue = rawValue }

        // MARK: Caller mistakes

        /// An argument is out of range (a size, a queue index, a socket path that is too long).
        public static let invalidArgument = Code(1)
        /// A system call failed; ``SharedMemoryError/underlyingError`` says why.
        public static let systemCallFailed = Code(2)
        /// The device executable could not be started.
        public static let spawnFailed = Code(3)
        /// The device name given to a device host is not one of its devices.
        public static let unknownDevice = Code(4)

        // MARK: The region file

        /// The file is not sealed against shrinking (F_SEAL_SHRINK), so the peer could truncate
        /// it under our mapping; or it is not a regular, sealable file at all.
        public static let regionNotSealed = Code(20)
        /// The file is empty, or smaller than its header says.
        public static let regionTooSmall = Code(21)
        /// The region's header is malformed; ``SharedMemoryError/virtqueueError`` names the field.
        public static let invalidHeader = Code(22)

        // MARK: The socket handshake

        /// A handshake message is malformed: wrong size, magic, version, role or reserved bytes.
        public static let handshakeMalformed = Code(40)
        /// A handshake message carried the wrong number of file descriptors, or one of the wrong kind.
        public static let handshakeFileDescriptors = Code(41)
        /// The peer hung up before the handshake completed.
        public static let handshakeHangUp = Code(42)
        /// The peer refused the region it was offered; the message carries its status.
        public static let handshakeRefused = Code(43)
        /// No peer connected or answered in time.
        public static let timedOut = Code(44)

        public var description: String {
            switch self {
            case .invalidArgument: "invalidArgument"
            case .systemCallFailed: "systemCallFailed"
            case .spawnFailed: "spawnFailed"
            case .unknownDevice: "unknownDevice"
            case .regionNotSealed: "regionNotSealed"
            case .regionTooSmall: "regionTooSmall"
            case .invalidHeader: "invalidHeader"
            case .handshakeMalformed: "handshakeMalformed"
            case .handshakeFileDescriptors: "handshakeFileDescriptors"
            case .handshakeHangUp: "handshakeHangUp"
            case .handshakeRefused: "handshakeRefused"
            case .timedOut: "timedOut"
            default: "code(\(rawValue))"
            }
        }
    }

    /// The code.
    public var code: Code
    /// A human-readable account that names the offending values.
    public var message: String
    /// The operating system's error, for ``Code-swift.struct/systemCallFailed`` and friends.
    public var underlyingError: Errno?
    /// For ``Code-swift.struct/invalidHeader``: the core's error naming the bad field.
    public var virtqueueError: VirtqueueError?

    /// Creates an error.
    public init(_ code: Code, _ message: String, underlyingError: Errno? = nil, virtqueueError: VirtqueueError? = nil) {
        self.code = code
        self.message = message
        self.underlyingError = underlyingError
        self.virtqueueError = virtqueueError
    }

    public var description: String {
        var text = "SharedMemoryError.\(code): \(message)"
        if let underlyingError { text += " (\(underlyingError))" }
        return text
    }

    /// A failed system call named `call`, with the current `errno`.
    static func system(_ call: String, _ errno: Errno = .current) -> SharedMemoryError {
        SharedMemoryError(.systemCallFailed, "\(call) failed", underlyingError: errno)
    }
}

extension Errno {
    /// The calling thread's `errno`.
    static var current: Errno { Errno(rawValue: _currentErrno()) }
}
