import Glibc
public import Virtqueue

/// A ``Virtqueue/Notifier`` over one end of a Unix socket pair: a kick is one byte, a wait is
/// `poll` for input and a `read` that drains every byte sent so far.
///
/// Make a connected pair with ``makePair()``. The rules of `Notifier`, and how this keeps them:
///
/// - **A kick before the wait is not lost**: the byte stays in the socket until the wait reads it.
/// - **Kicks merge, and never block**: the socket is non-blocking; when its buffer is full the
///   peer has unread kicks already, so `EAGAIN` is a kick delivered. A wait drains them all.
/// - **A dead peer ends the wait**: when the peer's socket is closed — ``close()``, or its
///   process exited — `read` returns 0 (end of file), and the wait throws `peerDied`. The kernel
///   closes a dead process's sockets, so this works across processes too.
public final class SocketNotifier: Notifier {
    /// This end of the socket pair.
    public let socket: CInt

    init(socket: CInt) {
        self.socket = socket
    }

    deinit {
        Glibc.close(socket)
    }

    /// Makes the two connected ends: one for the driver, one for the device.
    ///
    /// - Throws: ``SystemCallError`` from `socketpair`.
    public static func makePair() throws(SystemCallError) -> (driver: SocketNotifier, device: SocketNotifier) {
        var sockets: [CInt] = [-1, -1]
        let type = CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, type, 0, &sockets) == 0 else { throw .current("socketpair") }
        return (SocketNotifier(socket: sockets[0]), SocketNotifier(socket: sockets[1]))
    }

    /// Sends one byte to the peer.
    ///
    /// - Throws: `peerDied` if the peer's end is closed; `notifierFailed` for other errors.
    public func notify() throws(VirtqueueError) {
        var kick: UInt8 = 1
        while true {
            if send(socket, &kick, 1, CInt(MSG_NOSIGNAL)) == 1 { return }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return  // the peer has unread kicks: this one merges with them
            case EPIPE, ECONNRESET: throw VirtqueueError(.peerDied, "the peer closed its end of the socket pair")
            default: throw VirtqueueError(.notifierFailed, "send on a notifier socket failed", underlyingErrno: errno)
            }
        }
    }

    /// Blocks until the peer has kicked since the last wait, then drains every kick.
    ///
    /// - Throws: `peerDied` once the peer's end is closed and every kick it sent has been read;
    ///   `notifierFailed` for other errors.
    public func wait() throws(VirtqueueError) {
        var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        while poll(&descriptor, 1, -1) < 0 {
            guard errno == EINTR else {
                throw VirtqueueError(.notifierFailed, "poll on a notifier socket failed", underlyingErrno: errno)
            }
        }
        var kicks = 0
        var buffer = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while true {
            let count = withUnsafeMutableBytes(of: &buffer) { read(socket, $0.baseAddress, $0.count) }
            if count > 0 {
                kicks += count
            } else if count == 0 {
                // End of file: the peer is gone. Deliver the kicks it sent first, if any.
                if kicks > 0 { return }
                throw VirtqueueError(.peerDied, "the peer closed its end of the socket pair")
            } else if errno == EINTR {
                continue
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                return  // drained (or a spurious wake-up, which callers tolerate)
            } else if errno == ECONNRESET {
                throw VirtqueueError(.peerDied, "the peer's end of the socket pair was reset")
            } else {
                throw VirtqueueError(.notifierFailed, "read on a notifier socket failed", underlyingErrno: errno)
            }
        }
    }

    /// Closes this end for both directions, as if this side had died: the peer's waits end with
    /// `peerDied`, and so do this end's. The descriptor itself is closed in `deinit`, so no other
    /// file can take its number while a copy of this notifier is still in use.
    public func close() {
        shutdown(socket, CInt(SHUT_RDWR))
    }
}
