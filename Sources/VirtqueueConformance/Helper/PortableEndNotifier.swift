import Glibc
import Virtqueue

/// A ``PortableNotifier`` as the helper process uses it: a kick writes the kick message to the
/// notify descriptor; a wait polls the wait descriptor and reads what is there.
///
/// Works on sockets of any type (with `MSG_DONTWAIT`, so a descriptor the peer made blocking
/// cannot block it), pipes and eventfds (one `read(2)` per wake-up, after `poll(2)` said there
/// is something to read).
struct PortableEndNotifier: Notifier {
    let notifyDescriptor: CInt
    let waitDescriptor: CInt
    let kickMessage: [UInt8]
    /// The suite's process: a wait also ends (`peerDied`) once the helper's parent is not it.
    let parent: pid_t

    /// How often a wait looks at its parent, in milliseconds.
    static let parentCheckInterval: CInt = 500
    /// `POLLRDHUP` (Linux): the peer shut its end down.
    static let readHangUp: Int16 = 0x2000
    /// Reads per wake-up, at most: a peer that floods the descriptor cannot keep a wait busy.
    static let drainLimit = 256

    init(_ portable: PortableNotifier, parent: pid_t) {
        notifyDescriptor = portable.notifyDescriptor
        waitDescriptor = portable.waitDescriptor
        kickMessage = portable.kickMessage
        self.parent = parent
    }

    func notify() throws(VirtqueueError) {
        var isSocket = true
        while true {
            let sent = kickMessage.withUnsafeBytes { bytes in
                isSocket
                    ? send(notifyDescriptor, bytes.baseAddress, bytes.count, CInt(MSG_DONTWAIT) | CInt(MSG_NOSIGNAL))
                    : write(notifyDescriptor, bytes.baseAddress, bytes.count)
            }
            if sent >= 0 { return }
            let error = errno
            switch error {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return  // a kick is pending already
            case ENOTSOCK where isSocket: isSocket = false
            case EPIPE, ECONNRESET, ENOTCONN:
                throw VirtqueueError(.peerDied, "the suite's end of descriptor \(notifyDescriptor) is gone")
            default:
                throw VirtqueueError(
                    .notifierFailed,
                    "a kick on descriptor \(notifyDescriptor) failed",
                    underlyingErrno: error
                )
            }
        }
    }

    func wait() throws(VirtqueueError) {
        var entry = pollfd(fd: waitDescriptor, events: Int16(POLLIN) | Self.readHangUp, revents: 0)
        while true {
            let ready = poll(&entry, 1, Self.parentCheckInterval)
            if ready > 0 { break }
            if ready == 0 {
                guard getppid() == parent else {
                    throw VirtqueueError(.peerDied, "the suite's process \(parent) is gone")
                }
                continue
            }
            let error = errno
            guard error == EINTR else {
                throw VirtqueueError(
                    .notifierFailed,
                    "poll on descriptor \(waitDescriptor) failed",
                    underlyingErrno: error
                )
            }
        }
        if entry.revents & Int16(POLLNVAL) != 0 {
            throw VirtqueueError(.notifierFailed, "descriptor \(waitDescriptor) is not open")
        }
        var buffer = [UInt8](repeating: 0, count: 64)
        var kicks = 0
        for _ in 0..<Self.drainLimit {
            let count = buffer.withUnsafeMutableBytes {
                recv(waitDescriptor, $0.baseAddress, $0.count, CInt(MSG_DONTWAIT))
            }
            if count > 0 {
                kicks += 1
                continue
            }
            if count < 0 {
                let error = errno
                switch error {
                case EINTR: continue
                case EAGAIN, EWOULDBLOCK: return
                case ENOTSOCK:
                    // A pipe or an eventfd: poll said readable, so one read does not block.
                    let read = buffer.withUnsafeMutableBytes { Glibc.read(waitDescriptor, $0.baseAddress, $0.count) }
                    if read > 0 || (read < 0 && (errno == EAGAIN || errno == EINTR)) { return }
                case ECONNRESET: break
                default:
                    throw VirtqueueError(
                        .notifierFailed,
                        "reading descriptor \(waitDescriptor) failed",
                        underlyingErrno: error
                    )
                }
            }
            // End of stream, a reset or a pipe's end of file: the suite's end is gone. Kicks
            // that came before it are delivered first.
            if kicks > 0 { return }
            throw VirtqueueError(.peerDied, "the suite's end of descriptor \(waitDescriptor) is gone")
        }
    }
}
