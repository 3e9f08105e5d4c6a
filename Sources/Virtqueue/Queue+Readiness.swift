extension DriverQueue where Memory: ~Copyable, Notify: ReadinessNotifier {
    /// The non-blocking half of ``waitForUsed(spins:)``, for a caller that sleeps in an event
    /// loop instead of in ``Notifier/wait()`` (`VirtqueueAsync`).
    ///
    /// Consumes a pending notification (``ReadinessNotifier/tryWait()``); then, if no used entry
    /// has arrived, asks the device for a notification (clearing `VIRTQ_AVAIL_F_NO_INTERRUPT`,
    /// or setting `used_event` under EVENT_IDX) and re-checks — the protocol of the blocking
    /// wait, so a completion published meanwhile is never slept through.
    ///
    /// - Returns: `true` when a used entry is ready to take (or nothing is in flight); `false`
    ///   when the caller should sleep until one of ``ReadinessNotifier/readinessDescriptors`` is
    ///   readable, then call this again.
    /// - Throws: As ``waitForUsed(spins:)``: ``VirtqueueError/Code-swift.struct/peerDied`` (which
    ///   breaks the queue) or ``VirtqueueError/Code-swift.struct/queueBroken``.
    @inlinable
    public mutating func prepareToWaitForUsed() throws(VirtqueueError) -> Bool {
        try state.pointee.side.checkUsable()
        guard state.pointee.inFlightCount > 0 else { return true }
        return try state.pointee.side.prepareToWait(notifier: notifier)
    }
}

extension DeviceQueue where Memory: ~Copyable, Notify: ReadinessNotifier {
    /// The non-blocking half of ``waitForRequests(spins:)``, for a caller that sleeps in an event
    /// loop instead of in ``Notifier/wait()`` (`VirtqueueAsync`).
    ///
    /// Consumes a pending notification (``ReadinessNotifier/tryWait()``); then, if the driver
    /// has made nothing available, asks for a kick (clearing `VIRTQ_USED_F_NO_NOTIFY`, or setting
    /// `avail_event` under EVENT_IDX) and re-checks, as the blocking wait does.
    ///
    /// - Returns: `true` when a request is ready to take; `false` when the caller should sleep
    ///   until one of ``ReadinessNotifier/readinessDescriptors`` is readable, then call again.
    /// - Throws: As ``waitForRequests(spins:)``: ``VirtqueueError/Code-swift.struct/peerDied``
    ///   (which breaks the queue) or ``VirtqueueError/Code-swift.struct/queueBroken``.
    @inlinable
    public mutating func prepareToWaitForRequests() throws(VirtqueueError) -> Bool {
        try state.pointee.side.prepareToWait(notifier: notifier)
    }
}
