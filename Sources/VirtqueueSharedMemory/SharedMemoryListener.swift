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
    /// - Parameters:
    ///   - file: The region file.
    ///   - queueIndex: The queue the peer attaches to.
    ///   - peerRole: The peer's end of the queue.
    ///   - timeout: How long to wait for a peer to connect and, again, for its answer; `nil` for ever.
    /// - Throws: ``SharedMemoryError``; ``SharedMemoryError/Code-swift.struct/timedOut`` if no
    ///   peer connected in time.
    public func accept(
        offering file: SharedMemoryFile,
        queueIndex: Int = 0,
        peerRole: SharedMemoryConnection.Role = .device,
        timeout: Duration? = nil
    ) throws(SharedMemoryError) -> SharedMemoryConnection {
        let listening = descriptor.withLock { $0 }
        guard listening >= 0 else { throw SharedMemoryError(.invalidArgument, "the listener at \(path) is closed") }
        if let timeout, try pollOne(listening, events: CInt(POLLIN), timeout: timeout) == 0 {
            throw SharedMemoryError(.timedOut, "no peer connected to \(path) within \(timeout)")
        }
        let client = try retrying("accept") { vq_accept(listening) }
        return try SharedMemoryConnection.offer(
            file,
            queueIndex: queueIndex,
            peerRole: peerRole,
            over: FileDescriptor(rawValue: client),
            timeout: timeout
        )
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
