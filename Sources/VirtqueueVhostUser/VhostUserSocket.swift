import CVirtqueueSystem
import Glibc
public import SystemPackage

/// One end of a vhost-user connection: a connected UNIX stream socket that carries messages and
/// their file descriptors (`SCM_RIGHTS`).
///
/// Reading blocks, but never for ever once a message has begun: ``receive(expectingReply:limits:idleTimeout:messageTimeout:)``
/// waits up to `idleTimeout` for a message to start and up to `messageTimeout` for the rest of it,
/// so a peer that stalls mid-message cannot hold us. The socket is switched to non-blocking mode
/// on adoption; every wait is a `poll(2)`.
///
/// The socket is closed when the object is released.
public final class VhostUserSocket: Sendable {
    /// The socket (owned by this object).
    public let fileDescriptor: FileDescriptor

    /// Adopts a connected `AF_UNIX`, `SOCK_STREAM` socket (the caller gives up ownership) and
    /// makes it non-blocking.
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/systemCallFailed`` if `fcntl` fails; the
    ///   descriptor is closed then.
    public init(adopting fileDescriptor: FileDescriptor) throws(VhostUserError) {
        if vq_set_nonblocking(fileDescriptor.rawValue) < 0 {
            let error = Errno(rawValue: Glibc.errno)
            _ = Glibc.close(fileDescriptor.rawValue)
            throw .system("fcntl(F_SETFL, O_NONBLOCK)", error)
        }
        self.fileDescriptor = fileDescriptor
    }

    deinit {
        _ = Glibc.close(fileDescriptor.rawValue)
    }

    /// Connects to the vhost-user socket at `path` (the front-end's end; a back-end listens with
    /// ``VhostUserListener``).
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/systemCallFailed`` if the connection fails.
    public static func connect(to path: FilePath) throws(VhostUserError) -> VhostUserSocket {
        let fd = vq_unix_connect_stream(path.string)
        guard fd >= 0 else { throw .system("connecting to \(path)", Errno(rawValue: errno)) }
        return try VhostUserSocket(adopting: FileDescriptor(rawValue: fd))
    }

    /// Two connected sockets (`socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`): for a
    /// supervisor and a worker, or for tests.
    public static func makePair() throws(VhostUserError) -> (VhostUserSocket, VhostUserSocket) {
        var fds: [CInt] = [-1, -1]
        let kind = CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, kind, 0, &fds) == 0 else {
            throw .system("socketpair", Errno(rawValue: Glibc.errno))
        }
        let first: VhostUserSocket
        do {
            first = try VhostUserSocket(adopting: FileDescriptor(rawValue: fds[0]))
        } catch {
            _ = Glibc.close(fds[1])
            throw error
        }
        return (first, try VhostUserSocket(adopting: FileDescriptor(rawValue: fds[1])))
    }

    // MARK: Receiving

    /// Reads one whole message: the 12-byte header (validated at once, so the payload's size is
    /// bounded before it is read), then exactly `size` bytes of payload, with every file
    /// descriptor that arrived on the way.
    ///
    /// Short reads, `EINTR` and `EAGAIN` are retried. At most ``VhostUserLimits/maxFileDescriptors``
    /// descriptors are accepted per message; with more (or when the kernel truncated them,
    /// `MSG_CTRUNC`), the rest of the message is still read — so the stream stays in step — and
    /// then ``VhostUserError/Code-swift.struct/tooManyFileDescriptors`` is thrown with every
    /// descriptor closed.
    ///
    /// - Parameters:
    ///   - expectingReply: Whether the message is a reply (the front-end's side) rather than a request.
    ///   - limits: The bounds (the payload bound is used here).
    ///   - idleTimeout: How long to wait for a message to begin; `nil` waits for ever (a back-end
    ///     waiting for its next request).
    ///   - messageTimeout: How long the rest of the message may take once its first byte came;
    ///     `nil` waits for ever.
    /// - Returns: The frame; decode it with ``VhostUserFrame/decodeRequest(limits:)`` or
    ///   ``VhostUserFrame/decodeReply(to:limits:)``.
    /// - Throws: ``VhostUserError``: `peerClosed` at end of stream between messages,
    ///   `truncatedMessage` at end of stream inside one, `timedOut`, `tooManyFileDescriptors`, a
    ///   header violation (after which the stream cannot be trusted: close the connection), or
    ///   `systemCallFailed`. No descriptor stays open after a throw.
    public func receive(
        expectingReply: Bool = false,
        limits: VhostUserLimits = VhostUserLimits(),
        idleTimeout: Duration? = nil,
        messageTimeout: Duration? = .seconds(5)
    ) throws(VhostUserError) -> VhostUserFrame {
        var state = ReceiveState(
            socket: fileDescriptor.rawValue,
            idle: Deadline(idleTimeout),
            messageTimeout: messageTimeout
        )
        var headerBytes = [UInt8](repeating: 0, count: VhostUserHeader.size)
        try state.read(into: &headerBytes)
        let header: VhostUserHeader
        do {
            header = try VhostUserHeader.decode(headerBytes, isReply: expectingReply, limits: limits)
        } catch {
            state.descriptors.removeAll()
            throw error
        }
        var payload = [UInt8](repeating: 0, count: Int(header.payloadSize))
        try state.read(into: &payload)
        if let violation = state.violation {
            state.descriptors.removeAll()
            throw violation
        }
        return VhostUserFrame(header: header, payload: payload, fileDescriptors: state.descriptors)
    }

    /// Reads one request and decodes it (``receive(expectingReply:limits:idleTimeout:messageTimeout:)``
    /// then ``VhostUserFrame/decodeRequest(limits:)``).
    public func receiveRequest(
        limits: VhostUserLimits,
        idleTimeout: Duration? = nil,
        messageTimeout: Duration? = .seconds(5)
    ) throws(VhostUserError) -> VhostUserDecodedRequest {
        let frame = try receive(
            expectingReply: false,
            limits: limits,
            idleTimeout: idleTimeout,
            messageTimeout: messageTimeout
        )
        return try frame.decodeRequest(limits: limits)
    }

    // MARK: Sending

    /// Sends one message with its descriptors (`sendmsg`, `MSG_NOSIGNAL`): the descriptors go
    /// with the first bytes; a short write is continued without them.
    ///
    /// - Parameter timeout: How long the whole message may take (the peer must read); `nil`: for ever.
    /// - Throws: ``VhostUserError``: `invalidArgument` for a descriptor that is not open (a
    ///   placeholder, or one already taken) or too many of them, `peerClosed` if the peer is gone
    ///   (`EPIPE`, `ECONNRESET`), `timedOut`, or `systemCallFailed`.
    public func send(_ message: VhostUserOutgoingMessage, timeout: Duration? = .seconds(5)) throws(VhostUserError) {
        var raw: [CInt] = []
        for descriptor in message.fileDescriptors {
            guard let fd = descriptor.fileDescriptor else {
                throw VhostUserError(.invalidArgument, "a descriptor to send is not open (\(descriptor))")
            }
            raw.append(fd.rawValue)
        }
        guard raw.count <= VhostUserLimits.maxFileDescriptors else {
            throw VhostUserError(.invalidArgument, "\(raw.count) descriptors are above the bound of 8 per message")
        }
        let deadline = Deadline(timeout)
        let bytes = message.bytes
        var sent = 0
        while sent < bytes.count {
            guard try waitReady(fileDescriptor.rawValue, events: CInt(POLLOUT), until: deadline) else {
                throw VhostUserError(
                    .timedOut,
                    "the peer did not accept the message in time (\(sent) of \(bytes.count) bytes sent)"
                )
            }
            let passing = sent == 0 ? raw : []
            let result = bytes.withUnsafeBytes { buffer in
                passing.withUnsafeBufferPointer { fds in
                    // `sent < bytes.count`, so the buffer is not empty and has a base address.
                    vq_send_with_fds(
                        fileDescriptor.rawValue,
                        buffer.baseAddress.map { $0 + sent },
                        buffer.count - sent,
                        fds.baseAddress,
                        CInt(fds.count)
                    )
                }
            }
            if result >= 0 {
                sent += result
                continue
            }
            let error = Errno(rawValue: Glibc.errno)
            switch error {
            case .wouldBlock, .interrupted: continue
            case .brokenPipe, .connectionReset:
                throw VhostUserError(
                    .peerClosed,
                    "the peer closed the connection while we sent",
                    underlyingError: error
                )
            default: throw .system("sendmsg", error)
            }
        }
    }
}

/// The bookkeeping of one ``VhostUserSocket/receive(expectingReply:limits:idleTimeout:messageTimeout:)``.
private struct ReceiveState {
    let socket: CInt
    let idle: Deadline
    let messageTimeout: Duration?
    /// Set when the first byte arrives.
    var message: Deadline?
    var received = 0
    var descriptors: [VhostUserFileDescriptor] = []
    /// A descriptor violation seen on the way; thrown once the message is read.
    var violation: VhostUserError?

    init(socket: CInt, idle: Deadline, messageTimeout: Duration?) {
        self.socket = socket
        self.idle = idle
        self.messageTimeout = messageTimeout
    }

    /// Fills `buffer` from the socket.
    mutating func read(into buffer: inout [UInt8]) throws(VhostUserError) {
        var filled = 0
        while filled < buffer.count {
            let deadline = message ?? idle
            guard try waitReady(socket, events: CInt(POLLIN), until: deadline) else {
                descriptors.removeAll()
                throw received == 0
                    ? VhostUserError(.timedOut, "no message arrived in time")
                    : VhostUserError(.timedOut, "the peer stalled after \(received) bytes of a message")
            }
            let room = max(VhostUserLimits.maxFileDescriptors - descriptors.count, 0)
            var fds = [CInt](repeating: -1, count: VhostUserLimits.maxFileDescriptors)
            var arrived: CInt = 0
            var flags: CInt = 0
            let offset = filled
            let result = buffer.withUnsafeMutableBytes { bytes in
                fds.withUnsafeMutableBufferPointer { fdBuffer in
                    vq_receive_with_fds(
                        socket,
                        bytes.baseAddress.map { $0 + offset },
                        bytes.count - offset,
                        fdBuffer.baseAddress,
                        CInt(room),
                        &arrived,
                        &flags
                    )
                }
            }
            if result < 0 {
                let error = Errno(rawValue: Glibc.errno)
                if error == .wouldBlock || error == .interrupted { continue }
                descriptors.removeAll()
                if error == .connectionReset {
                    throw VhostUserError(.peerClosed, "the peer reset the connection", underlyingError: error)
                }
                throw .system("recvmsg", error)
            }
            let kept = min(Int(arrived), room)
            for index in 0..<kept { descriptors.append(VhostUserFileDescriptor(owning: fds[index])) }
            if Int(arrived) > room || flags & CInt(MSG_CTRUNC) != 0, violation == nil {
                let total = descriptors.count + Int(arrived) - kept
                violation = VhostUserError(
                    .tooManyFileDescriptors,
                    flags & CInt(MSG_CTRUNC) != 0
                        ? "the peer sent so many file descriptors that the kernel truncated them"
                        : "the peer sent \(total) file descriptors with one message; the bound is "
                            + "\(VhostUserLimits.maxFileDescriptors)"
                )
            }
            if result == 0 {
                descriptors.removeAll()
                throw received == 0
                    ? VhostUserError(.peerClosed, "the peer closed the connection")
                    : VhostUserError(
                        .truncatedMessage,
                        "the peer closed the connection after \(received) bytes of a message"
                    )
            }
            if message == nil { message = Deadline(messageTimeout) }
            filled += result
            received += result
        }
    }
}
