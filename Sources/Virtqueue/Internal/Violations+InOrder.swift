/// The errors of the VIRTIO_F_IN_ORDER rules, built out of line.
extension VirtqueueError {
    static func chainInProgress(head: UInt32) -> VirtqueueError {
        VirtqueueError(
            .chainInProgress,
            "the chain at head \(head) is being built: under IN_ORDER the driver builds one chain at a time, each on the descriptors after the last one's; submit or discard it first"
        )
    }

    static func usedOutOfOrder(
        _ head: UInt16,
        position: UInt16,
        batch: Int,
        covered: Int,
        oldest: UInt16
    ) -> VirtqueueError {
        VirtqueueError(
            .usedOutOfOrder,
            "used.ring[\(position)] names chain \(head), the \(batch)th oldest in flight (the oldest is \(oldest)), but used.idx covers \(covered) from \(position): under IN_ORDER the device returned it before the chains made available before it"
        )
    }

    static func usedPastInFlight(_ index: UInt16, position: UInt16, inFlight: Int) -> VirtqueueError {
        VirtqueueError(
            .usedPastInFlight,
            "used.idx \(index) reports \(Int(index &- position)) buffers used from \(position), but only \(inFlight) chains are in flight"
        )
    }
}
