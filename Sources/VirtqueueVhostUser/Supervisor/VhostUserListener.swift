import CVirtqueueSystem
import Glibc
public import SystemPackage

/// A listening vhost-user socket: the back-end's end of `-chardev socket,path=…` (QEMU connects
/// as the client, and reconnects with `reconnect=N` after the back-end went away).
///
/// The socket file is created on ``init(path:)`` (a stale one from an earlier run is replaced)
/// and removed when the listener goes away.
public final class VhostUserListener: Sendable {
    /// The socket's path.
    public let path: FilePath
    let descriptor: CInt

    /// Creates the socket at `path` and listens on it.
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/systemCallFailed`` if it cannot be created
    ///   (a directory that does not exist, a path longer than 107 bytes, a file that is not a socket).
    public init(path: FilePath) throws(VhostUserError) {
        let text = path.string
        var status = stat()
        if lstat(text, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK {
            _ = unlink(text)
        }
        let fd = vq_unix_listen_stream(text, 4)
        guard fd >= 0 else { throw .system("listening on \(text)", Errno(rawValue: errno)) }
        self.path = path
        self.descriptor = fd
    }

    deinit {
        _ = Glibc.close(descriptor)
        _ = unlink(path.string)
    }

    /// Waits up to `timeout` (for ever if `nil`) for a front-end to connect.
    ///
    /// - Returns: The connection, or `nil` if none came in time.
    /// - Throws: ``VhostUserError/Code-swift.struct/systemCallFailed`` if `poll` or `accept` fails.
    public func accept(timeout: Duration?) throws(VhostUserError) -> VhostUserSocket? {
        guard try waitReady(descriptor, events: CInt(POLLIN), until: Deadline(timeout)) else { return nil }
        let client = vq_accept(descriptor)
        guard client >= 0 else {
            let error = Errno(rawValue: errno)
            if error == .wouldBlock || error.rawValue == ECONNABORTED { return nil }
            throw .system("accept on \(path)", error)
        }
        return try VhostUserSocket(adopting: FileDescriptor(rawValue: client))
    }
}
