public import Virtqueue

/// The notifier of a single-threaded fuzz run: it counts kicks, and a wait — which in a real
/// system would block until a peer that will never come — ends as if the peer had died.
public struct FuzzNotifier: Notifier {
    /// Creates a notifier.
    public init() {}

    public func notify() throws(VirtqueueError) {}

    public func wait() throws(VirtqueueError) {
        throw VirtqueueError(.peerDied, "the fuzz harness has no peer to wait for")
    }
}
