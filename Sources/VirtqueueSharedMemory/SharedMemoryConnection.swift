import CVirtqueueSystem
import Glibc
public import SystemPackage
public import Virtqueue

/// One side of a queue attached over a UNIX socket: the way an unrelated process — written in
/// Swift, C, Rust or Python — attaches to a region.
///
/// The creator of the region listens (``SharedMemoryListener``) or holds one end of a connected
/// socket, and ``offer(_:queueIndex:peerRole:over:timeout:)``s the region; the other process
/// ``connect(to:timeout:)``s (or ``receive(over:timeout:)``s) and gets, by `SCM_RIGHTS`, the
/// region file and the notify end of the notification channel the creator waits on, with a
/// 64-byte message that says which queue to serve in which role. It answers with a 16-byte
/// verdict and, when it accepts, the notify end of the channel it waits on. Each side makes the
/// channel it waits on, so the end it receives on is never in the peer's hands. The byte layout
/// is in `docs/wire-format.md`.
///
/// After the handshake the socket carries nothing more: it stays open as the liveness channel.
/// When either side closes it or dies, the other's ``notifier`` reports
/// `VirtqueueError/Code/peerDied`.
public final class SharedMemoryConnection: Sendable {
    /// Which end of the queue a process holds.
    public enum Role: UInt16, Sendable, Hashable {
        /// Serves requests (waits on the kick channel, notifies through the call channel).
        case device = 1
        /// Submits requests (notifies through the kick channel, waits on the call channel).
        case driver = 2

        /// The other end.
        public var peer: Role { self == .device ? .driver : .device }
    }

    /// This side's role.
    public let role: Role
    /// The queue this connection is for.
    public let queueIndex: Int
    /// The features the region negotiated.
    public let features: Features
    /// The region file.
    public let file: SharedMemoryFile
    /// This side's notifier; its liveness channel is the connection's socket.
    public let notifier: EventNotifier
    /// The peer's process id as the kernel reports it (`SO_PEERCRED`), if known.
    public let peerProcessID: Int32?

    init(role: Role, queueIndex: Int, features: Features, file: SharedMemoryFile, notifier: EventNotifier, socket: CInt)
    {
        self.role = role
        self.queueIndex = queueIndex
        self.features = features
        self.file = file
        self.notifier = notifier
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        self.peerProcessID = vq_peer_credentials(socket, &pid, &uid, &gid) == 0 && pid > 0 ? pid : nil
    }

    /// Maps the region, for this side's queue.
    ///
    /// - Throws: ``SharedMemoryError`` if `mmap` fails.
    public func makeRegion() throws(SharedMemoryError) -> SharedMemoryRegion {
        try file.map()
    }

    /// Hangs up: the peer's waits end with `VirtqueueError/Code/peerDied`
    /// (and so do this side's).
    public func close() {
        notifier.close()
    }

    // MARK: Receiving a region

    /// Connects to the UNIX socket at `path` and receives a region (see ``receive(over:timeout:)``).
    ///
    /// - Throws: ``SharedMemoryError``: ``SharedMemoryError/Code-swift.struct/systemCallFailed``
    ///   if nobody listens there, or any error of ``receive(over:timeout:)``.
    public static func connect(to path: FilePath, timeout: Duration? = nil) throws(SharedMemoryError)
        -> SharedMemoryConnection
    {
        let fd = vq_unix_connect(path.string)
        guard fd >= 0 else {
            let error = Errno.current
            if error == .fileNameTooLong || error == .invalidArgument {
                throw SharedMemoryError(
                    .invalidArgument,
                    "socket path \"\(path)\" is empty or too long",
                    underlyingError: error
                )
            }
            throw .system("connect to \(path)", error)
        }
        return try receive(over: FileDescriptor(rawValue: fd), timeout: timeout)
    }

    /// Receives a region over a connected `SOCK_SEQPACKET` UNIX socket, validates everything,
    /// and answers the creator.
    ///
    /// Checks, in order: the message's size, magic, version, role and reserved bytes; that it
    /// carries exactly two descriptors; that the second is a connected `AF_UNIX`,
    /// `SOCK_SEQPACKET` socket (the notify end of the creator's channel); that the first is a
    /// regular file sealed against shrinking, as large as the message says; that the region's
    /// header is valid, has the queue, and negotiated the features the message names. On any
    /// failure every received descriptor is closed, the creator is told why, and the socket is
    /// closed. On success it makes the channel this side waits on and answers with its notify end.
    ///
    /// - Parameters:
    ///   - socket: The connected socket; the connection owns it from now on (closed on failure).
    ///   - timeout: How long to wait for the offer; `nil` for ever.
    /// - Throws: ``SharedMemoryError`` with ``SharedMemoryError/Code-swift.struct/handshakeMalformed``,
    ///   ``SharedMemoryError/Code-swift.struct/handshakeFileDescriptors``,
    ///   ``SharedMemoryError/Code-swift.struct/handshakeHangUp``, ``SharedMemoryError/Code-swift.struct/timedOut``,
    ///   or a region error (``SharedMemoryError/Code-swift.struct/regionNotSealed``,
    ///   ``SharedMemoryError/Code-swift.struct/invalidHeader``, …).
    public static func receive(over socket: FileDescriptor, timeout: Duration? = nil) throws(SharedMemoryError)
        -> SharedMemoryConnection
    {
        let sock = socket.rawValue
        var owned: [CInt] = []
        var answered = false
        do throws(SharedMemoryError) {
            if let timeout, try pollOne(sock, events: CInt(POLLIN), timeout: timeout) == 0 {
                throw SharedMemoryError(.timedOut, "no offer arrived within \(timeout)")
            }
            let capacity = 256
            var bytes = [UInt8](repeating: 0, count: capacity)
            var fds = [CInt](repeating: -1, count: 8)
            var received: CInt = 0
            var flags: CInt = 0
            let count = vq_receive_with_fds(sock, &bytes, capacity, &fds, CInt(fds.count), &received, &flags)
            if count < 0 {
                let error = Errno.current
                if error == .connectionReset { throw SharedMemoryError(.handshakeHangUp, "the creator hung up") }
                throw .system("recvmsg", error)
            }
            owned = Array(fds.prefix(min(Int(received), fds.count)))
            if count == 0 && received == 0 {
                answered = true
                throw SharedMemoryError(.handshakeHangUp, "the creator hung up before sending its offer")
            }
            if flags & CInt(MSG_TRUNC) != 0 {
                throw SharedMemoryError(.handshakeMalformed, "the offer is longer than \(capacity) bytes")
            }
            let offer = try bytes.withUnsafeBytes { raw in
                Result { () throws(SharedMemoryError) in
                    try Handshake.Offer(parsing: UnsafeRawBufferPointer(rebasing: raw[0..<count]))
                }
            }.get()
            guard received == CInt(Handshake.descriptorCount), flags & CInt(MSG_CTRUNC) == 0 else {
                throw SharedMemoryError(
                    .handshakeFileDescriptors,
                    "the offer carries \(received)\(flags & CInt(MSG_CTRUNC) != 0 ? " or more" : "") descriptors, not \(Handshake.descriptorCount)"
                )
            }
            try checkNotificationSocket(owned[1], "descriptor 1 of the offer")
            let regionFD = owned.removeFirst()
            let file = try SharedMemoryFile(adopting: FileDescriptor(rawValue: regionFD))
            guard UInt64(file.byteCount) == offer.regionByteCount else {
                throw SharedMemoryError(
                    .regionTooSmall,
                    "the region file has \(file.byteCount) bytes, the offer says \(offer.regionByteCount)"
                )
            }
            let layout = try file.map().validatedLayout()
            file.remember(layout)
            guard Int(offer.queueIndex) < layout.queues.count else {
                throw SharedMemoryError(
                    .invalidArgument,
                    "the offer names queue \(offer.queueIndex); the region has \(layout.queues.count)"
                )
            }
            guard layout.features == offer.features else {
                throw SharedMemoryError(
                    .invalidArgument,
                    "the offer names features \(offer.features); the region's header says \(layout.features)"
                )
            }
            // The creator's channel (call if this side is the device, kick if the driver): this
            // side notifies through it. The one this side waits on it makes itself.
            let notifying = owned[0]
            let own = try EventNotifier.makeChannel()
            owned.append(own.waitEnd.rawValue)
            answered = true
            defer { closeDescriptor(own.notifyEnd.rawValue) }
            try send(
                Handshake.Answer(status: .attached).encoded(),
                over: sock,
                descriptors: [own.notifyEnd.rawValue]
            )
            owned.removeAll()
            let role = offer.receiverRole
            let notifier = EventNotifier(
                waitingOn: own.waitEnd,
                notifying: FileDescriptor(rawValue: notifying),
                liveness: .connection(socket)
            )
            return SharedMemoryConnection(
                role: role,
                queueIndex: Int(offer.queueIndex),
                features: layout.features,
                file: file,
                notifier: notifier,
                socket: sock
            )
        } catch {
            if !answered {
                _ = try? send(Handshake.Answer(status: .init(for: error)).encoded(), over: sock, descriptors: [])
            }
            closeDescriptors(owned)
            closeDescriptor(sock)
            throw error
        }
    }

    // MARK: Offering a region

    /// Offers queue `queueIndex` of `file` over a connected `SOCK_SEQPACKET` UNIX socket, to a
    /// peer that will hold the `peerRole` end, and waits for its answer.
    ///
    /// Makes the notification channel this side waits on, sends the 64-byte offer with the
    /// region file and that channel's notify end, and reads the 16-byte answer, which must carry
    /// the notify end of the channel the peer waits on: a connected `AF_UNIX`, `SOCK_SEQPACKET`
    /// socket that is not one of this side's own. If it does not, this side hangs up.
    ///
    /// - Parameters:
    ///   - file: The region file; its header must be written (``SharedMemoryFile/create(layout:name:)``).
    ///   - queueIndex: The queue the peer attaches to.
    ///   - peerRole: The peer's end of the queue; this side holds the other.
    ///   - socket: The connected socket; the connection owns it from now on (closed on failure).
    ///   - timeout: How long to wait for the answer; `nil` for ever.
    /// - Throws: ``SharedMemoryError`` with ``SharedMemoryError/Code-swift.struct/handshakeHangUp``,
    ///   ``SharedMemoryError/Code-swift.struct/handshakeRefused``, ``SharedMemoryError/Code-swift.struct/handshakeMalformed``,
    ///   ``SharedMemoryError/Code-swift.struct/handshakeFileDescriptors`` (the answer's descriptor),
    ///   ``SharedMemoryError/Code-swift.struct/timedOut``, or ``SharedMemoryError/Code-swift.struct/invalidArgument``
    ///   if the file's header is invalid or lacks the queue.
    public static func offer(
        _ file: SharedMemoryFile,
        queueIndex: Int = 0,
        peerRole: Role = .device,
        over socket: FileDescriptor,
        timeout: Duration? = nil
    ) throws(SharedMemoryError) -> SharedMemoryConnection {
        let sock = socket.rawValue
        var owned: [CInt] = [sock]
        do throws(SharedMemoryError) {
            // What this process wrote, if it created the file; otherwise read and validated once.
            let layout: RegionLayout
            if let known = file.layout {
                layout = known
            } else {
                layout = try file.map().validatedLayout()
            }
            file.remember(layout)
            guard layout.queues.indices.contains(queueIndex) else {
                throw SharedMemoryError(
                    .invalidArgument,
                    "queue index \(queueIndex) is not below the region's \(layout.queues.count) queues"
                )
            }
            // The channel this side waits on (call if the peer is the device, kick if the driver):
            // made here, so its wait end is never in the peer's hands.
            let own = try EventNotifier.makeChannel()
            owned.append(own.waitEnd.rawValue)
            let sentIdentity = fileIdentity(own.notifyEnd.rawValue)
            let offer = Handshake.Offer(
                receiverRole: peerRole,
                queueIndex: UInt16(queueIndex),
                features: layout.features,
                regionByteCount: UInt64(file.byteCount)
            )
            do {
                defer { closeDescriptor(own.notifyEnd.rawValue) }
                try send(
                    offer.encoded(),
                    over: sock,
                    descriptors: [file.fileDescriptor.rawValue, own.notifyEnd.rawValue]
                )
            }
            if let timeout, try pollOne(sock, events: CInt(POLLIN), timeout: timeout) == 0 {
                throw SharedMemoryError(.timedOut, "the peer did not answer within \(timeout)")
            }
            var bytes = [UInt8](repeating: 0, count: 64)
            var fds = [CInt](repeating: -1, count: 8)
            var received: CInt = 0
            var flags: CInt = 0
            let count = vq_receive_with_fds(sock, &bytes, bytes.count, &fds, CInt(fds.count), &received, &flags)
            if count < 0 {
                let error = Errno.current
                if error == .connectionReset { throw SharedMemoryError(.handshakeHangUp, "the peer hung up") }
                throw .system("recvmsg", error)
            }
            let answerFDs = Array(fds.prefix(min(Int(received), fds.count)))
            owned += answerFDs
            if count == 0 && received == 0 {
                throw SharedMemoryError(.handshakeHangUp, "the peer hung up before answering")
            }
            guard flags & CInt(MSG_TRUNC) == 0 else {
                throw SharedMemoryError(.handshakeMalformed, "the answer is longer than \(bytes.count) bytes")
            }
            let answer = try bytes.withUnsafeBytes { raw in
                Result { () throws(SharedMemoryError) in
                    try Handshake.Answer(parsing: UnsafeRawBufferPointer(rebasing: raw[0..<count]))
                }
            }.get()
            guard answer.status == .attached else {
                throw SharedMemoryError(.handshakeRefused, "the peer refused the region: \(answer.status.name)")
            }
            guard received == CInt(Handshake.answerDescriptorCount), flags & CInt(MSG_CTRUNC) == 0 else {
                throw SharedMemoryError(
                    .handshakeFileDescriptors,
                    "the answer carries \(received)\(flags & CInt(MSG_CTRUNC) != 0 ? " or more" : "") descriptors, not \(Handshake.answerDescriptorCount)"
                )
            }
            let notifying = answerFDs[0]
            try checkNotificationSocket(notifying, "the answer's descriptor")
            let identity = fileIdentity(notifying)
            if let identity,
                identity == sentIdentity || identity == fileIdentity(own.waitEnd.rawValue)
                    || identity == fileIdentity(sock)
            {
                throw SharedMemoryError(
                    .handshakeFileDescriptors,
                    "the answer's descriptor is one of this side's own sockets, not the peer's channel"
                )
            }
            let role = peerRole.peer
            owned.removeAll()
            return SharedMemoryConnection(
                role: role,
                queueIndex: queueIndex,
                features: layout.features,
                file: file,
                notifier: EventNotifier(
                    waitingOn: own.waitEnd,
                    notifying: FileDescriptor(rawValue: notifying),
                    liveness: .connection(socket)
                ),
                socket: sock
            )
        } catch {
            closeDescriptors(owned)
            throw error
        }
    }

    /// Sends one message; a peer that has gone is a hang-up.
    static func send(_ bytes: [UInt8], over sock: CInt, descriptors: [CInt]) throws(SharedMemoryError) {
        let sent = bytes.withUnsafeBytes { raw in
            vq_send_with_fds(sock, raw.baseAddress, raw.count, descriptors, CInt(descriptors.count))
        }
        if sent == bytes.count { return }
        let error = sent < 0 ? Errno.current : Errno.ioError
        if error == .brokenPipe || error == .connectionReset || error == .socketNotConnected {
            throw SharedMemoryError(.handshakeHangUp, "the peer hung up during the handshake", underlyingError: error)
        }
        throw .system("sendmsg", error)
    }
}
