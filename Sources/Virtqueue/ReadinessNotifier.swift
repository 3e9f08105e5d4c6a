/// A ``Notifier`` whose waits an event loop can do for it: it names the file descriptors that
/// become readable when ``Notifier/wait()`` would return, and consumes a notification without
/// blocking.
///
/// The blocking API never uses this: ``DriverQueue/waitForUsed(spins:)`` and
/// ``DeviceQueue/waitForRequests(spins:)`` call ``Notifier/wait()`` as before. An asynchronous
/// caller (the `VirtqueueAsync` module) registers ``readinessDescriptors`` with its event loop,
/// and between sleeps calls ``DriverQueue/prepareToWaitForUsed()`` or
/// ``DeviceQueue/prepareToWaitForRequests()``, which call ``tryWait()`` and keep the queues'
/// notification suppression exactly as the blocking wait does, so no wake-up is lost.
///
/// The rules, besides ``Notifier``'s:
///
/// - Every descriptor stays open, and is the same, for the notifier's lifetime.
/// - A pending notification, or the peer's death, makes at least one descriptor readable
///   (`EPOLLIN`, `EPOLLHUP` or `EPOLLRDHUP`) until ``tryWait()`` consumes it or reports the death.
/// - ``tryWait()`` never blocks, whatever the peer does.
public protocol ReadinessNotifier: Notifier {
    /// The descriptors to watch for readability. Read once, when a waiter registers.
    var readinessDescriptors: [Int32] { get }

    /// Consumes the pending notifications without blocking.
    ///
    /// - Returns: Whether a notification was pending.
    /// - Throws: ``VirtqueueError`` with code ``VirtqueueError/Code-swift.struct/peerDied`` when
    ///   the peer has gone and nothing is pending, as ``Notifier/wait()`` would; another code if
    ///   the check failed.
    func tryWait() throws(VirtqueueError) -> Bool
}
