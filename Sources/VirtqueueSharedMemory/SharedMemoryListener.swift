import CVirtqueueSystem
import Glibc
import Synchronization
public import SystemPackage

/// A UNIX socket on which a region's creator waits for peers to attach.
///
/// ```swift
/// let file = try SharedMemoryFile.create(layout: layout)
/// let listener = try SharedMemoryListener(path: "/run/my-device.sock")
/// let connection = try listener.accept(offering: file, peerRole: .device)
/// var driver = try DriverQueue(region: try connection.makeRegion(), notifier: connection.notifier)
/// ```
///
/// The socket is `SOCK_SEQPACKET`, created with the process's umask: restrict who may connect by
/// the directory's permissions, or check ``SharedMemoryConnection/peerProcessID``. The socket
/// file is removed by ``close()`` or `deinit`.
public final class SharedMemoryListener: Sendable {
    /// Where the socket is bound.
    public let path: FilePath
    let descriptor: Mutex<CInt>

    /// Binds a socket at `path` and listens.
    ///
    /// - Parameters:
    ///   - path: A path of at most 107 bytes where no file exists yet.
    ///   - backlog: How many connections may wait to be accepted.
    /// - Throws: ``SharedMemoryError`` with ``SharedMemoryError/Code-swift.struct/invalidArgument``
    ///   if the path is empty or too long, or ``SharedMemoryError/Code-swift.struct/systemCallFailed``
    ///   (for example `EADDRINUSE` when a file is already there).
    public init(path: FilePath, backlog: Int = 16) throws(SharedMemoryError) {
        let fd = vq_unix_listen(path.string, CInt(clamping: backlog))
        guard fd >= 0 else {
            let error = Errno.current
            if error == .fileNameTooLong || error == .invalidArgument {
                throw SharedMemoryError(
                    .invalidArgument,
                    "socket path \"\(path)\" is empty or too long",
                    underlyingError: error
                )
            }
            throw .system("bind or listen on \(path)", error)
        }
        self.path = path
        self.descriptor = Mutex(fd)
    }

    deinit {
        close()
    }

    /// Waits for a peer to connect, then offers it queue `queueIndex` of `file` (see
    /// ``SharedMemoryConnection/offer(_:queueIndex:peerRole:over:timeout:)``).
    ///
    /// Each peer gets `handshakeTimeout` to answer the offer. A peer that stays silent is hung up
    /// on and the listener goes on to the next connection, so one silent (or hostile) client
    /// cannot stall the others; a peer that answers — accepting or refusing — ends the call.
    ///
    /// - Parameters:
    ///   - file: The region file.
    ///   - queueIndex: The queue the peer attaches to.
    ///   - peerRole: The peer's end of the queue.
    ///   - timeout: How long to wait, in all, for a peer that completes the handshake; `nil` for ever.
    ///   - handshakeTimeout: How long each peer has to answer the offer.
    /// - Throws: ``SharedMemoryError``; ``SharedMemoryError/Code-swift.struct/timedOut`` if no
    ///   peer completed the handshake in time (the message names the last silent one), or the
    ///   handshake's error for a peer that answered wrongly.
    public func accept(
        offering file: SharedMemoryFile,
        queueIndex: Int = 0,
        peerRole: SharedMemoryConnection.Role = .device,
        timeout: Duration? = nil,
        handshakeTimeout: Duration = .seconds(5)
    ) throws(SharedMemoryError) -> SharedMemoryConnection {
        let listening = descriptor.withLock { $0 }
        guard listening >= 0 else { throw SharedMemoryError(.invalidArgument, "the listener at \(path) is closed") }
        let clock = ContinuousClock()
        let deadline = timeout.map { clock.now + $0 }
        var silent: SharedMemoryError?
        while true {
            var remaining: Duration?
            if let deadline {
                let left = deadline - clock.now
                guard left > .zero else {
                    let last = silent.map { ": the last peer \($0.message)" } ?? ""
                    throw SharedMemoryError(
                        .timedOut,
                        "no peer completed the handshake on \(path) within \(timeout ?? .zero)\(last)"
                    )
                }
                remaining = left
            }
            if let remaining, try pollOne(listening, events: CInt(POLLIN), timeout: remaining) == 0 {
                continue
            }
            let client = try retrying("accept") { vq_accept(listening) }
            do {
                return try SharedMemoryConnection.offer(
                    file,
                    queueIndex: queueIndex,
                    peerRole: peerRole,
                    over: FileDescriptor(rawValue: client),
                    timeout: remaining.map { min($0, handshakeTimeout) } ?? handshakeTimeout
                )
            } catch  where error.code == .timedOut {
                // A silent peer: `offer` closed its socket; serve the next connection.
                silent = error
            }
        }
    }

    /// Stops listening and removes the socket file. Connections already made stay up.
    public func close() {
        descriptor.withLock { fd in
            guard fd >= 0 else { return }
            closeDescriptor(fd)
            fd = -1
            _ = unlink(path.string)
        }
    }
}
