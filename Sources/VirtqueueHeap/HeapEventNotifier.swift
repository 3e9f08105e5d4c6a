import CVirtqueueSystem
import Glibc
import Synchronization
public import Virtqueue

/// A `Notifier` between two threads of one process, on eventfds: ``HeapNotifier``'s rules, and a
/// descriptor an event loop can watch, so either side may wait with `VirtqueueAsync`.
///
/// ``HeapNotifier`` sleeps on a semaphore, which no event loop can watch; this one keeps one
/// eventfd per direction. `notify()` adds 1 to the peer's eventfd (a full counter means a
/// wake-up is pending: nothing is lost); `wait()` sleeps in `poll(2)` on this side's eventfd and
/// resets it. Notifications merge. When one side calls ``close()``, the other side's current and
/// future waits end with `VirtqueueError/Code/peerDied`.
///
/// Make a connected pair with ``makePair()``.
public struct HeapEventNotifier: ReadinessNotifier {
    let incoming: Signal
    let outgoing: Signal

    /// Makes the two connected ends: one for the driver, one for the device.
    ///
    /// - Throws: `VirtqueueError` with code `VirtqueueError/Code/notifierFailed`
    ///   if an eventfd cannot be created.
    public static func makePair() throws(VirtqueueError) -> (driver: HeapEventNotifier, device: HeapEventNotifier) {
        let toDevice = try Signal()
        let toDriver = try Signal()
        return (
            HeapEventNotifier(incoming: toDriver, outgoing: toDevice),
            HeapEventNotifier(incoming: toDevice, outgoing: toDriver)
        )
    }

    /// Wakes the peer: adds 1 to its eventfd. Never blocks.
    public func notify() throws(VirtqueueError) {
        try outgoing.raise()
    }

    /// Sleeps until the peer notifies (or has since the last wait), or until it closed its end.
    ///
    /// - Throws: `VirtqueueError/Code/peerDied` once the peer has closed its end;
    ///   `VirtqueueError/Code/notifierFailed` if `poll` or `read` fails.
    public func wait() throws(VirtqueueError) {
        while try !incoming.consume(sleeping: true) {}
    }

    /// This side's eventfd, readable while a notification is pending or the peer has closed.
    public var readinessDescriptors: [Int32] { [incoming.descriptor] }

    /// Resets this side's eventfd without sleeping.
    ///
    /// - Returns: Whether a notification was pending.
    /// - Throws: As ``wait()``.
    public func tryWait() throws(VirtqueueError) -> Bool {
        try incoming.consume(sleeping: false)
    }

    /// Closes this end: the peer's current and future waits end with `VirtqueueError/Code/peerDied`.
    public func close() {
        outgoing.close()
    }

    /// One direction: an eventfd and whether the side that raises it has closed. The eventfd is
    /// closed when the last copy of either end goes away.
    final class Signal: Sendable {
        let descriptor: CInt
        let closed = Atomic<Bool>(false)

        init() throws(VirtqueueError) {
            descriptor = vq_eventfd()
            guard descriptor >= 0 else {
                throw VirtqueueError(.notifierFailed, "eventfd failed (errno \(errno))", underlyingErrno: errno)
            }
        }

        deinit {
            _ = Glibc.close(descriptor)
        }

        func raise() throws(VirtqueueError) {
            if vq_eventfd_signal(descriptor) == 0 || errno == EAGAIN { return }
            throw VirtqueueError(.notifierFailed, "write to eventfd failed (errno \(errno))", underlyingErrno: errno)
        }

        /// Resets the counter, after sleeping until it is non-zero if `sleeping`. Returns
        /// whether it was non-zero.
        func consume(sleeping: Bool) throws(VirtqueueError) -> Bool {
            if closed.load(ordering: .acquiring) { throw HeapNotifier.peerGone }
            if sleeping {
                var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                while poll(&entry, 1, -1) < 0 {
                    guard errno == EINTR else {
                        throw VirtqueueError(.notifierFailed, "poll failed (errno \(errno))", underlyingErrno: errno)
                    }
                }
            }
            let drained = vq_eventfd_drain(descriptor)
            guard drained >= 0 else {
                throw VirtqueueError(
                    .notifierFailed,
                    "read from eventfd failed (errno \(errno))",
                    underlyingErrno: errno
                )
            }
            if closed.load(ordering: .acquiring) { throw HeapNotifier.peerGone }
            return drained > 0
        }

        func close() {
            closed.store(true, ordering: .releasing)
            _ = vq_eventfd_signal(descriptor)
        }
    }
}
