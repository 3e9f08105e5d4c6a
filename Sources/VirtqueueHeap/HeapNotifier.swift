import Dispatch
import Synchronization
public import Virtqueue

/// A `Notifier` between two threads of one process.
///
/// Make a connected pair with ``makePair()``: the driver's `notify()` wakes the device's `wait()`
/// and the other way round. Notifications merge: any number sent before a wait wake it once.
/// When one side calls ``close()`` (its thread is done), the other side's `wait()` ends with
/// `VirtqueueError/Code/peerDied` instead of blocking for ever.
public struct HeapNotifier: Notifier {
    let incoming: Signal
    let outgoing: Signal

    /// Makes the two connected ends: one for the driver, one for the device.
    public static func makePair() -> (driver: HeapNotifier, device: HeapNotifier) {
        let toDevice = Signal()
        let toDriver = Signal()
        return (
            HeapNotifier(incoming: toDriver, outgoing: toDevice),
            HeapNotifier(incoming: toDevice, outgoing: toDriver)
        )
    }

    public func notify() throws(VirtqueueError) {
        outgoing.raise()
    }

    public func wait() throws(VirtqueueError) {
        if incoming.isClosed { throw Self.peerGone }
        incoming.await()
        if incoming.isClosed { throw Self.peerGone }
    }

    /// Closes this end: the peer's current and future waits end with
    /// `VirtqueueError/Code/peerDied`.
    public func close() {
        outgoing.close()
    }

    static let peerGone = VirtqueueError(.peerDied, "the peer closed its end of the heap notifier")

    /// A merged wake-up: `raise` signals the semaphore only if no wake-up is already pending.
    final class Signal: Sendable {
        let pending = Atomic<Bool>(false)
        let closed = Atomic<Bool>(false)
        let semaphore = DispatchSemaphore(value: 0)

        var isClosed: Bool { closed.load(ordering: .acquiring) }

        func raise() {
            if !pending.exchange(true, ordering: .acquiringAndReleasing) {
                semaphore.signal()
            }
        }

        func await() {
            semaphore.wait()
            pending.store(false, ordering: .releasing)
        }

        func close() {
            closed.store(true, ordering: .releasing)
            semaphore.signal()
        }
    }
}
