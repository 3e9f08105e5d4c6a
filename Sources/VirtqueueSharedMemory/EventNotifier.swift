import CVirtqueueSystem
import Glibc
public import SystemPackage
public import Virtqueue

/// A `Notifier` between two processes: two notification sockets, plus a descriptor that tells
/// whether the peer is still there.
///
/// Each direction is a channel of its own, an `AF_UNIX`, `SOCK_SEQPACKET` socket pair
/// (`docs/wire-format.md`, section 7): this side holds the *wait end* of the channel the peer
/// notifies it through and the *notify end* of the channel it notifies the peer through.
/// `notify()` sends a one-byte message; `wait()` sleeps in `poll(2)` on the wait end and on the
/// liveness descriptor together, then receives every pending message. Notifications merge: any
/// number sent before a wait wake it once.
///
/// **No call blocks, whatever the peer does.** Both calls pass `MSG_DONTWAIT`, a flag of the
/// call itself: a peer that clears `O_NONBLOCK` on a file description it shares with us changes
/// nothing. A full channel (the peer does not receive) means a wake-up is already pending there,
/// so `notify()` drops the notification and returns; a wait receives at most a bounded number of
/// messages, so a peer that floods it cannot keep it busy for ever.
///
/// When the peer dies or hangs up, `wait()` ends with `VirtqueueError/Code/peerDied` at once, and
/// so does `notify()` once the peer's end of the channel is gone: the queues then break and the
/// driver takes back every chain in flight (`DriverQueue/takeAbandoned()`). The peer is gone when
/// its end of either notification channel is closed or shut down, or when the liveness descriptor
/// says so: a pidfd of the peer process (readable when it exits) or a connected UNIX socket (hung
/// up when the peer closes it or dies; nothing is ever sent on it after the handshake).
///
/// The notifier owns its descriptors and closes them when its last copy goes away.
public struct EventNotifier: Notifier {
    /// What tells this side that its peer has gone, besides the notification sockets.
    public enum Liveness: Sendable {
        /// A pidfd (`pidfd_open(2)`) of the peer process.
        case process(FileDescriptor)
        /// A connected socket whose other end the peer holds.
        case connection(FileDescriptor)
        /// Nothing else: the peer's death shows only when its notification ends close, which a
        /// process that shared them with another does not guarantee. For tests and trusted setups.
        case none
    }

    /// At most this many pending notifications are received per wake-up; more wake the next wait.
    static let drainLimit: CInt = 256

    let channel: Channel

    /// Creates a notifier from descriptors it takes ownership of.
    ///
    /// Both are ends of `AF_UNIX`, `SOCK_SEQPACKET` socket pairs (``makeChannel()`` makes one);
    /// any other kind of descriptor makes `notify()` and `wait()` fail with
    /// `VirtqueueError/Code/notifierFailed`.
    ///
    /// - Parameters:
    ///   - waitingOn: The wait end of the channel the peer notifies this side through.
    ///   - notifying: The notify end of the channel this side notifies the peer through.
    ///   - liveness: What else tells this side that the peer has gone.
    public init(waitingOn: FileDescriptor, notifying: FileDescriptor, liveness: Liveness) {
        channel = Channel(waitFD: waitingOn.rawValue, notifyFD: notifying.rawValue, liveness: liveness)
    }

    /// Makes one notification channel: an `AF_UNIX`, `SOCK_SEQPACKET` socket pair, close-on-exec.
    /// Keep the wait end; hand the notify end to the side that will notify you. Where the kernel
    /// allows it (Linux 6.16 and later), the wait end refuses descriptors passed through it.
    ///
    /// - Throws: ``SharedMemoryError`` if the sockets cannot be created.
    public static func makeChannel() throws(SharedMemoryError) -> (waitEnd: FileDescriptor, notifyEnd: FileDescriptor) {
        var fds: [CInt] = [-1, -1]
        try retrying("socketpair") { vq_notification_pair(&fds) }
        return (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
    }

    /// Makes a connected pair in this process: two notification channels, and a socket pair
    /// for liveness, so that ``close()`` on one end, or the last copy of it going away, ends the
    /// other's waits.
    ///
    /// - Throws: ``SharedMemoryError`` if a descriptor cannot be created.
    public static func makePair() throws(SharedMemoryError) -> (driver: EventNotifier, device: EventNotifier) {
        let kick = try makeChannel()
        var made = [kick.waitEnd.rawValue, kick.notifyEnd.rawValue]
        do throws(SharedMemoryError) {
            let call = try makeChannel()
            made += [call.waitEnd.rawValue, call.notifyEnd.rawValue]
            var sockets: [CInt] = [-1, -1]
            try retrying("socketpair") { vq_socketpair(&sockets) }
            return (
                EventNotifier(
                    waitingOn: call.waitEnd,
                    notifying: kick.notifyEnd,
                    liveness: .connection(FileDescriptor(rawValue: sockets[0]))
                ),
                EventNotifier(
                    waitingOn: kick.waitEnd,
                    notifying: call.notifyEnd,
                    liveness: .connection(FileDescriptor(rawValue: sockets[1]))
                )
            )
        } catch {
            closeDescriptors(made)
            throw error
        }
    }

    /// Sends one notification: a one-byte message, `send(2)` with `MSG_DONTWAIT | MSG_NOSIGNAL`.
    ///
    /// Never blocks. A full channel means the peer has notifications it has not received yet,
    /// so this one is dropped: nothing is lost.
    ///
    /// - Throws: `VirtqueueError/Code/peerDied` when the peer's end of the channel is closed or
    ///   shut down; `VirtqueueError/Code/notifierFailed` if `send` fails otherwise.
    public func notify() throws(VirtqueueError) {
        guard vq_notification_send(channel.notifyFD) < 0 else { return }
        let error = Errno.current
        if error == .brokenPipe || error == .connectionReset || error == .socketNotConnected {
            throw VirtqueueError(
                .peerDied,
                "the peer closed its end of the notification socket (send: \(error))",
                underlyingErrno: error.rawValue
            )
        }
        throw VirtqueueError(
            .notifierFailed,
            "send on notification socket \(channel.notifyFD) failed: \(error)",
            underlyingErrno: error.rawValue
        )
    }

    /// Sleeps until the peer notifies (or has since the last wait), or until it is gone.
    ///
    /// - Throws: `VirtqueueError/Code/peerDied` when the peer's end of the channel has closed or
    ///   the liveness descriptor reports the peer gone, and no notification is pending;
    ///   `VirtqueueError/Code/notifierFailed` if `poll` or `recv` fails otherwise.
    public func wait() throws(VirtqueueError) {
        while try !poll(timeout: -1) {}
    }

    /// One `poll(2)` of the wait end and the liveness descriptor, `timeout` milliseconds at most
    /// (-1: no limit), then the pending notifications received: ``wait()`` repeats it until a
    /// notification arrives, ``tryWait()`` does it once with no timeout.
    ///
    /// - Returns: Whether a notification arrived (`false`: none, or a spurious wake-up).
    /// - Throws: As ``wait()``.
    func poll(timeout: CInt) throws(VirtqueueError) -> Bool {
        let waitFD = channel.waitFD
        let livenessFD = channel.livenessFD
        var entries = (
            pollfd(fd: waitFD, events: Int16(POLLIN) | Int16(VQ_POLLRDHUP), revents: 0),
            pollfd(fd: livenessFD, events: Int16(POLLIN) | Int16(VQ_POLLRDHUP), revents: 0)
        )
        var ready: CInt = -1
        while ready < 0 {
            ready = withUnsafeMutablePointer(to: &entries) { pair in
                pair.withMemoryRebound(to: pollfd.self, capacity: 2) { entry in
                    Glibc.poll(entry, livenessFD >= 0 ? 2 : 1, timeout)
                }
            }
            if ready < 0 {
                let error = Errno.current
                if error == .interrupted { continue }
                throw VirtqueueError(.notifierFailed, "poll failed: \(error)", underlyingErrno: error.rawValue)
            }
        }
        let events = entries.0.revents
        if events & Int16(POLLNVAL) != 0 {
            throw VirtqueueError(.notifierFailed, "notification socket \(waitFD) is not open (POLLNVAL)")
        }
        if events != 0 {
            let hungUp = events & (Int16(VQ_POLLRDHUP) | Int16(POLLHUP)) != 0
            let drained = vq_notification_drain(waitFD, Self.drainLimit, hungUp ? 1 : 0)
            if drained > 0 { return true }
            if drained == VQ_NOTIFICATION_END {
                throw VirtqueueError(.peerDied, "the peer closed its end of the notification socket")
            }
            if drained < 0 {
                let error = Errno.current
                if error == .connectionReset || error == .brokenPipe {
                    throw VirtqueueError(
                        .peerDied,
                        "the peer closed its end of the notification socket (recv: \(error))",
                        underlyingErrno: error.rawValue
                    )
                }
                throw VirtqueueError(
                    .notifierFailed,
                    "recv on notification socket \(waitFD) failed: \(error)",
                    underlyingErrno: error.rawValue
                )
            }
        }
        if entries.1.revents != 0 {
            throw VirtqueueError(
                .peerDied,
                channel.livenessIsProcess ? "the peer process exited" : "the peer hung up"
            )
        }
        return false
    }

    /// Hangs up this end: the peer's waits end with `VirtqueueError/Code/peerDied`, and so do
    /// this side's; later notifications report `VirtqueueError/Code/peerDied` too.
    ///
    /// Safe while another thread waits or notifies: the sockets are shut down, not closed.
    public func close() {
        _ = shutdown(channel.waitFD, CInt(SHUT_RDWR))
        _ = shutdown(channel.notifyFD, CInt(SHUT_RDWR))
        if !channel.livenessIsProcess && channel.livenessFD >= 0 {
            _ = shutdown(channel.livenessFD, CInt(SHUT_RDWR))
        }
    }

    /// Owns the descriptors; closes them when the last copy of the notifier goes away.
    final class Channel: Sendable {
        let waitFD: CInt
        let notifyFD: CInt
        let livenessFD: CInt
        let livenessIsProcess: Bool

        init(waitFD: CInt, notifyFD: CInt, liveness: Liveness) {
            self.waitFD = waitFD
            self.notifyFD = notifyFD
            switch liveness {
            case .process(let fd):
                livenessFD = fd.rawValue
                livenessIsProcess = true
            case .connection(let fd):
                livenessFD = fd.rawValue
                livenessIsProcess = false
            case .none:
                livenessFD = -1
                livenessIsProcess = false
            }
        }

        deinit {
            closeDescriptors([waitFD, notifyFD, livenessFD])
        }
    }
}
