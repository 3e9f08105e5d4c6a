public import Virtqueue

/// A notifier for a driver and a device driven by one thread: kicks are counted, waits return at
/// once (the caller re-checks the ring). The in-process cycles never call it on their hot path.
public struct InlineNotifier: Notifier {
    /// Creates a notifier.
    public init() {}

    /// Does nothing: the peer runs on this thread and will look at the ring next.
    public func notify() throws(VirtqueueError) {}

    /// Returns at once.
    public func wait() throws(VirtqueueError) {}
}
