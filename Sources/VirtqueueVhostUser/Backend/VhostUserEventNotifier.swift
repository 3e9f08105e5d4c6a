import CVirtqueueSystem
import Glibc
import Synchronization
public import SystemPackage
public import Virtqueue

/// A ``Notifier`` over the eventfds a vhost-user front-end passes (SET_VRING_KICK and
/// SET_VRING_CALL), hardened against a front-end that misuses them.
///
/// `wait()` sleeps in `poll(2)` on the wait eventfd (the back-end's kick) and on a private stop
/// eventfd; `notify()` adds 1 to the notify eventfd (the back-end's call). ``close()`` signals the
/// stop eventfd: every wait, present and future, then ends with
/// ``VirtqueueError/Code-swift.struct/peerDied``. The back-end closes a ring's notifier when the
/// connection ends, on GET_VRING_BASE and when it disables the ring, so no wait outlives them.
///
/// **Against a hostile front-end.** The eventfds' file descriptions are shared with the
/// front-end, which can clear `O_NONBLOCK` on them and fill their counters.
/// - The wait side reads with `RWF_NOWAIT`, so a read never blocks whatever the flag says.
/// - The notify side first asks `poll(POLLOUT, timeout 0)` whether one more can be added. If the
///   counter is full, the signal is dropped: a full counter already means "signalled", and the
///   front-end sees it as soon as it reads. A write that fails with `EAGAIN` is dropped the same way.
/// - Residual race: between that poll and the write, the front-end can fill the counter to its
///   maximum *and* clear `O_NONBLOCK`; the write then blocks until the front-end reads the
///   counter. Only the ring's own serving thread blocks (never the session), and the back-end
///   gives up waiting for that thread after its stop timeout (``VhostUserError/Code-swift.struct/ringDidNotStop``)
///   and closes the connection; the thread stays blocked until the front-end reads or exits.
///   No setting of the front-end can make notify block when it is not racing us on purpose.
///
/// Either eventfd may be absent (the "no fd" flag of SET_VRING_KICK / SET_VRING_CALL): without a
/// wait eventfd the front-end expects polling, and `wait()` returns after ``pollInterval``
/// (a spurious wake-up, which callers re-check); without a notify eventfd `notify()` does nothing.
/// The notify eventfd can be replaced while the ring runs (``replaceNotifyTarget(_:)``, QEMU
/// re-sends SET_VRING_CALL when the guest masks an interrupt).
public struct VhostUserEventNotifier: Notifier {
    /// `POLLRDHUP` (0x2000, Linux): the peer shut its end of a stream socket down or closed it.
    static let peerHangUp: Int16 = 0x2000

    /// How long a wait without a wait eventfd sleeps before it returns: 1 ms.
    public static let pollInterval: Duration = .milliseconds(1)

    let channel: Channel

    /// Creates a notifier over `waitingOn` (woken by the peer) and `notifying` (the peer's), holding
    /// a reference to each (their descriptors stay open while the notifier lives), and a stop
    /// eventfd of its own.
    ///
    /// - Parameters:
    ///   - waitingOn: The eventfd the peer signals, or `nil` to poll.
    ///   - notifying: The eventfd to signal the peer through, or `nil` for none.
    /// - Throws: ``VhostUserError/Code-swift.struct/systemCallFailed`` if the stop eventfd cannot be made.
    ///   - watching: A descriptor whose hang-up means the peer is gone — the front-end role
    ///     passes the connection, so a back-end that dies ends every wait with `peerDied`. It is
    ///     polled for `POLLRDHUP` only (never read), and must outlive the notifier.
    public init(
        waitingOn: VhostUserFileDescriptor?,
        notifying: VhostUserFileDescriptor?,
        watching liveness: FileDescriptor? = nil
    ) throws(VhostUserError) {
        let stop = vq_eventfd()
        guard stop >= 0 else { throw .system("eventfd", Errno(rawValue: errno)) }
        channel = Channel(wait: waitingOn, notify: notifying, stop: stop, liveness: liveness?.rawValue ?? -1)
    }

    /// Adds 1 to the notify eventfd unless its counter is full (a wake-up is then pending anyway).
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/notifierFailed`` if `poll` or `write` fails
    ///   for another reason than a full counter.
    public func notify() throws(VirtqueueError) {
        guard let target = channel.notifyTarget.withLock({ $0 }), let fd = target.fileDescriptor?.rawValue else {
            return
        }
        var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        while true {
            let ready = poll(&entry, 1, 0)
            if ready >= 0 { break }
            let error = Errno(rawValue: errno)
            if error == .interrupted { continue }
            throw VirtqueueError(
                .notifierFailed,
                "poll on eventfd \(fd) failed: \(error)",
                underlyingErrno: error.rawValue
            )
        }
        guard entry.revents & Int16(POLLOUT) != 0 else { return }
        guard vq_eventfd_signal(fd) == 0 else {
            let error = Errno(rawValue: errno)
            if error == .resourceTemporarilyUnavailable { return }
            throw VirtqueueError(
                .notifierFailed,
                "write to eventfd \(fd) failed: \(error)",
                underlyingErrno: error.rawValue
            )
        }
    }

    /// Sleeps until the wait eventfd is signalled (or has been since the last wait), or the
    /// notifier is closed.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/peerDied`` once ``close()`` was called;
    ///   ``VirtqueueError/Code-swift.struct/notifierFailed`` if `poll` or `read` fails.
    public func wait() throws(VirtqueueError) {
        let stop = channel.stop
        guard let waitFD = channel.wait?.fileDescriptor?.rawValue else {
            let (seconds, attoseconds) = Self.pollInterval.components
            try pollStop(timeout: CInt(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000))
            return
        }
        let liveness = channel.liveness
        var entries = (
            pollfd(fd: waitFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: stop, events: Int16(POLLIN), revents: 0),
            pollfd(fd: liveness, events: Self.peerHangUp, revents: 0)
        )
        let count: nfds_t = liveness >= 0 ? 3 : 2
        while true {
            entries.0.revents = 0
            entries.1.revents = 0
            entries.2.revents = 0
            let ready = withUnsafeMutablePointer(to: &entries) { triple in
                triple.withMemoryRebound(to: pollfd.self, capacity: 3) { poll($0, count, -1) }
            }
            if ready < 0 {
                let error = Errno(rawValue: errno)
                if error == .interrupted { continue }
                throw VirtqueueError(.notifierFailed, "poll failed: \(error)", underlyingErrno: error.rawValue)
            }
            if entries.1.revents != 0 {
                throw VirtqueueError(.peerDied, "the ring was stopped or the connection closed")
            }
            if entries.2.revents != 0 {
                throw VirtqueueError(.peerDied, "the peer closed the connection (it ended or died)")
            }
            if entries.0.revents & Int16(POLLIN) != 0 {
                let drained = vq_eventfd_drain(waitFD)
                if drained > 0 { return }
                if drained < 0 {
                    let error = Errno(rawValue: errno)
                    throw VirtqueueError(
                        .notifierFailed,
                        "read from eventfd \(waitFD) failed: \(error)",
                        underlyingErrno: error.rawValue
                    )
                }
            }
            if entries.0.revents & Int16(POLLERR | POLLNVAL | POLLHUP) != 0 {
                throw VirtqueueError(
                    .notifierFailed,
                    "eventfd \(waitFD) reported an error (revents 0x\(String(entries.0.revents, radix: 16)))"
                )
            }
        }
    }

    /// Ends every wait, present and future, with ``VirtqueueError/Code-swift.struct/peerDied``.
    /// Safe from any thread.
    public func close() {
        _ = vq_eventfd_signal(channel.stop)
    }

    /// Whether ``close()`` was called.
    public var isClosed: Bool {
        var entry = pollfd(fd: channel.stop, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) > 0
    }

    /// Replaces the notify eventfd (or removes it, with `nil`) while the queue runs. A notify in
    /// progress finishes on the old one, which closes once no one uses it.
    public func replaceNotifyTarget(_ target: VhostUserFileDescriptor?) {
        channel.notifyTarget.withLock { $0 = target }
    }

    private func pollStop(timeout: CInt) throws(VirtqueueError) {
        var entry = pollfd(fd: channel.stop, events: Int16(POLLIN), revents: 0)
        let ready = poll(&entry, 1, timeout)
        if ready > 0 { throw VirtqueueError(.peerDied, "the ring was stopped or the connection closed") }
    }

    /// The descriptors; the stop eventfd closes with the last copy of the notifier.
    final class Channel: Sendable {
        let wait: VhostUserFileDescriptor?
        let notifyTarget: Mutex<VhostUserFileDescriptor?>
        let stop: CInt
        /// The descriptor whose hang-up means the peer is gone, or -1.
        let liveness: CInt

        init(wait: VhostUserFileDescriptor?, notify: VhostUserFileDescriptor?, stop: CInt, liveness: CInt) {
            self.wait = wait
            self.notifyTarget = Mutex(notify)
            self.stop = stop
            self.liveness = liveness
        }

        deinit {
            _ = Glibc.close(stop)
        }
    }
}
