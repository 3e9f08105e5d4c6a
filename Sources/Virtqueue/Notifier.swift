/// Kick-the-peer and wait-for-the-peer: the other half of the backend seam.
///
/// This replaces the notify callback (and its cookie) that seL4's libvirtqueue takes at
/// `virtqueue_init_driver` / `virtqueue_init_device`: whatever the callback needed — a seL4
/// notification capability, an eventfd, a semaphore — lives in the conforming value's stored
/// properties. Each side of a queue holds its own notifier: the driver's `notify()` wakes the
/// device's `wait()`, and the device's `notify()` wakes the driver's `wait()`.
///
/// The queues decide *whether* to notify (virtio's notification suppression, with or without
/// VIRTIO_F_EVENT_IDX); the notifier only delivers. The rules a notifier must keep:
///
/// - A notification sent before the peer waits is not lost: the next `wait()` returns at once.
///   Several notifications may be merged into one wake-up.
/// - `wait()` may return spuriously; callers re-check the ring.
/// - If the peer dies or closes its end, `wait()` ends with ``VirtqueueError/Code-swift.struct/peerDied``
///   instead of blocking forever.
///
/// Waiting blocks the calling thread, like `seL4_Wait` on a notification object: a device loop
/// is a thread (or a process) of its own, and a system call is the only way to sleep across
/// processes. Callers normally do not call `wait()` themselves: ``DriverQueue/waitForUsed(spins:)``
/// and ``DeviceQueue/waitForRequests(spins:)`` spin briefly, publish that they are going to sleep,
/// re-check the ring and only then wait, so no wake-up is lost.
public protocol Notifier: Sendable {
    /// Signals the peer.
    ///
    /// - Throws: ``VirtqueueError`` if the signal could not be delivered.
    func notify() throws(VirtqueueError)

    /// Blocks until the peer signals (or has signalled since the last wait).
    ///
    /// - Throws: ``VirtqueueError`` with code ``VirtqueueError/Code-swift.struct/peerDied`` when
    ///   the peer has gone, or another code if waiting failed.
    func wait() throws(VirtqueueError)
}
