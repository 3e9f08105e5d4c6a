import Synchronization
public import Virtqueue

/// A `Notifier` that counts the kicks and wake-ups going through another one.
///
/// Wrap a backend's notifier to see how many kicks notification suppression let through:
///
/// ```swift
/// let counting = CountingNotifier(ends.driver.notifier)
/// var driver = try DriverQueue(region: ends.driver.region, notifier: counting)
/// … submit a burst, notifyIfNeeded() after each …
/// assert(counting.kickCount <= 1)
/// ```
///
/// Copies share their counts.
public struct CountingNotifier<Base: Notifier>: Notifier {
    /// The wrapped notifier.
    public let base: Base
    let counters: Counters

    /// Wraps `base`, with both counts at zero.
    ///
    /// - Parameter base: The notifier that delivers the kicks.
    public init(_ base: Base) {
        self.base = base
        self.counters = Counters()
    }

    /// Kicks sent through ``notify()`` (including any that `base` failed to deliver).
    public var kickCount: Int { counters.kicks.load(ordering: .relaxed) }

    /// Calls to ``wait()`` that returned normally.
    public var wakeUpCount: Int { counters.wakeUps.load(ordering: .relaxed) }

    public func notify() throws(VirtqueueError) {
        counters.kicks.add(1, ordering: .relaxed)
        try base.notify()
    }

    public func wait() throws(VirtqueueError) {
        try base.wait()
        counters.wakeUps.add(1, ordering: .relaxed)
    }

    final class Counters: Sendable {
        let kicks = Atomic<Int>(0)
        let wakeUps = Atomic<Int>(0)
    }
}
