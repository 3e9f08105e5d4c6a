import CVirtqueueSystem
import Glibc
public import SystemPackage
public import Virtqueue

/// A `Notifier` between two processes: a pair of eventfds, plus a descriptor that tells
/// whether the peer is still there.
///
/// `notify()` adds 1 to the eventfd the peer waits on; `wait()` sleeps in `poll(2)` on this
/// side's eventfd and on the liveness descriptor together, then resets the eventfd's counter.
/// Notifications merge: any number sent before a wait wake it once. When the peer dies or hangs
/// up, `wait()` ends with `VirtqueueError/Code/peerDied` at once: the queues then
/// break and the driver takes back every chain in flight (`DriverQueue/takeAbandoned()`).
///
/// The liveness descriptor is either a pidfd of the peer process (readable when it exits) or a
/// connected UNIX socket (hung up when the peer closes it or dies). Nothing is ever sent on that
/// socket after the handshake, so any readiness on it means the peer is gone.
///
/// The notifier owns its descriptors and closes them when its last copy goes away.
public struct EventNotifier: Notifier {
    /// What tells this side that its peer has gone.
    public enum Liveness: Sendable {
        /// A pidfd (`pidfd_open(2)`) of the peer process.
        case process(FileDescriptor)
        /// A connected socket whose other end the peer holds.
        case connection(FileDescriptor)
        /// Nothing: `wait()` can block for ever if the peer dies. For tests and trusted setups.
        case none
    }

    let channel: Channel

    /// Creates a notifier from descriptors it takes ownership of.
    ///
    /// - Parameters:
    ///   - waitingOn: The eventfd the peer writes to wake this side.
    ///   - notifying: The eventfd this side writes to wake the peer.
    ///   - liveness: What tells this side that the peer has gone.
    public init(waitingOn: FileDescriptor, notifying: FileDescriptor, liveness: Liveness) {
        channel = Channel(waitFD: waitingOn.rawValue, notifyFD: notifying.rawValue, liveness: liveness)
    }

    /// Makes a connected pair in this process: two eventfds, and a socket pair for liveness, so
    /// that ``close()`` on one end, or the last copy of it going away, ends the other's waits.
    ///
    /// - Throws: ``SharedMemoryError`` if a descriptor cannot be created.
    public static func makePair() throws(SharedMemoryError) -> (driver: EventNotifier, device: EventNotifier) {
        let kick = try retrying("eventfd") { vq_eventfd() }
        var made = [kick]
        do throws(SharedMemoryError) {
            let call = try retrying("eventfd") { vq_eventfd() }
            made.append(call)
            let kickForDevice = try retrying("fcntl(F_DUPFD_CLOEXEC)") { vq_dup_cloexec(kick, 0) }
            made.append(kickForDevice)
            let callForDriver = try retrying("fcntl(F_DUPFD_CLOEXEC)") { vq_dup_cloexec(call, 0) }
            made.append(callForDriver)
            var sockets: [CInt] = [-1, -1]
            try retrying("socketpair") { vq_socketpair(&sockets) }
            return (
                EventNotifier(
                    waitingOn: FileDescriptor(rawValue: callForDriver),
                    notifying: FileDescriptor(rawValue: kick),
                    liveness: .connection(FileDescriptor(rawValue: sockets[0]))
                ),
                EventNotifier(
                    waitingOn: FileDescriptor(rawValue: kickForDevice),
                    notifying: FileDescriptor(rawValue: call),
                    liveness: .connection(FileDescriptor(rawValue: sockets[1]))
                )
            )
        } catch {
            closeDescriptors(made)
            throw error
        }
    }

    /// Adds 1 to the peer's eventfd (`write(2)` of an 8-byte 1).
    ///
    /// - Throws: `VirtqueueError/Code/notifierFailed` if the write fails.
    public func notify() throws(VirtqueueError) {
        guard vq_eventfd_signal(channel.notifyFD) == 0 else {
            let error = Errno.current
            // A full counter means a wake-up is already pending: nothing is lost.
            if error == .resourceTemporarilyUnavailable { return }
            throw VirtqueueError(
                .notifierFailed,
                "write to eventfd \(channel.notifyFD) failed: \(error)",
                underlyingErrno: error.rawValue
            )
        }
    }

    /// Sleeps until the peer notifies (or has since the last wait), or until it is gone.
    ///
    /// - Throws: `VirtqueueError/Code/peerDied` when the liveness descriptor
    ///   reports the peer gone and no notification is pending;
    ///   `VirtqueueError/Code/notifierFailed` if `poll` or `read` fails.
    public func wait() throws(VirtqueueError) {
        let waitFD = channel.waitFD
        let livenessFD = channel.livenessFD
        var entries = (
            pollfd(fd: waitFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: livenessFD, events: Int16(POLLIN) | Int16(VQ_POLLRDHUP), revents: 0)
        )
        while true {
            entries.0.revents = 0
            entries.1.revents = 0
            let ready = withUnsafeMutablePointer(to: &entries) { pair in
                pair.withMemoryRebound(to: pollfd.self, capacity: 2) { entry in
                    poll(entry, livenessFD >= 0 ? 2 : 1, -1)
                }
            }
            if ready < 0 {
                let error = Errno.current
                if error == .interrupted { continue }
                throw VirtqueueError(.notifierFailed, "poll failed: \(error)", underlyingErrno: error.rawValue)
            }
            if entries.0.revents & Int16(POLLIN) != 0 {
                let drained = vq_eventfd_drain(waitFD)
                if drained > 0 { return }
                if drained < 0 {
                    let error = Errno.current
                    throw VirtqueueError(
                        .notifierFailed,
                        "read from eventfd \(waitFD) failed: \(error)",
                        underlyingErrno: error.rawValue
                    )
                }
            }
            if entries.0.revents & Int16(POLLERR | POLLNVAL) != 0 {
                throw VirtqueueError(
                    .notifierFailed,
                    "eventfd \(waitFD) reported an error (revents 0x\(String(entries.0.revents, radix: 16)))"
                )
            }
            if entries.1.revents != 0 {
                throw VirtqueueError(
                    .peerDied,
                    channel.livenessIsProcess ? "the peer process exited" : "the peer hung up"
                )
            }
        }
    }

    /// Hangs up this end: the peer's waits end with `VirtqueueError/Code/peerDied`,
    /// and so do this side's. For a ``Liveness/connection(_:)`` only; otherwise does nothing.
    ///
    /// Safe while another thread waits: the socket is shut down, not closed.
    public func close() {
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
