public import Virtqueue

extension EventNotifier: ReadinessNotifier {
    /// The wait end of the channel the peer notifies this side through, and the liveness
    /// descriptor (a pidfd or a connected socket) when there is one: either becomes readable
    /// when ``wait()`` would return.
    public var readinessDescriptors: [Int32] {
        channel.livenessFD >= 0 ? [channel.waitFD, channel.livenessFD] : [channel.waitFD]
    }

    /// Receives the pending notifications without sleeping: one `poll(2)` with no timeout, as
    /// ``wait()`` does, then `recv(2)` with `MSG_DONTWAIT`.
    ///
    /// - Returns: Whether a notification was pending.
    /// - Throws: As ``wait()``: `VirtqueueError/Code/peerDied` when the peer has gone and
    ///   nothing is pending.
    public func tryWait() throws(VirtqueueError) -> Bool {
        try poll(timeout: 0)
    }
}
