extension QueueSide {
    /// The non-blocking half of ``waitForPeer(spins:notifier:)``, for an event loop: consumes a
    /// pending notification, then — unless the peer has an entry — publishes that this side is
    /// going to sleep and re-checks, the same enable / re-check the blocking wait does before it
    /// sleeps. Returns whether the peer has an entry (notifications are then disabled again, as
    /// after a blocking wait); `false` means the caller may sleep until the notifier is readable.
    /// A peer that died breaks the queue, as in the blocking wait.
    @inlinable
    mutating func prepareToWait<Notify: ReadinessNotifier>(notifier: Notify) throws(VirtqueueError) -> Bool {
        try checkUsable()
        publishStaged()
        do throws(VirtqueueError) {
            _ = try notifier.tryWait()
        } catch {
            // A notification pending beside the death still counts: the entries it announced
            // are taken first, and the next call reports the death.
            if peerEntryVisible() {
                disableNotifications()
                return true
            }
            if error.code == .peerDied { throw breakQueue(error) }
            throw error
        }
        if !peerEntryVisible() {
            enableNotifications()
            if !peerEntryVisible() { return false }
        }
        disableNotifications()
        return true
    }
}
