/// The driver's VIRTIO_F_IN_ORDER entry points (``InOrderDriverState``), reached from the cold
/// branches of the usual paths. They take the state, not the queue, so that the hot path never
/// has to keep the queue in memory for them.
extension DriverState {
    /// A chain's first segment found no free descriptor on the hot path's count: the ring is full
    /// — or, under IN_ORDER, whose free descriptors that count never shows, the in-order rules
    /// apply: no other chain is being built, a buffer is free, and the chain may take the next
    /// descriptor in ring order, which this lends to the count (the append takes it at once, and
    /// the count is 0 again).
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/ringFull``; under IN_ORDER also
    ///   ``VirtqueueError/Code-swift.struct/chainInProgress`` or
    ///   ``VirtqueueError/Code-swift.struct/poolExhausted``.
    @usableFromInline @inline(never)
    static func lendInOrderDescriptor(_ state: UnsafeMutablePointer<DriverState>) throws(VirtqueueError) {
        guard state.pointee.inOrder.enabled, state.pointee.inOrder.freeDescriptors > 0 else {
            throw .ringFull(size: state.pointee.ring.size)
        }
        if let building = state.pointee.inOrderChainInProgress { throw .chainInProgress(head: building) }
        guard state.pointee.freeBufferCount > 0 else {
            throw .poolExhausted(bufferCount: state.pointee.bufferCount)
        }
        state.pointee.inOrder.freeDescriptors &-= 1
        state.pointee.freeDescriptorCount = 1
        state.pointee.inOrder.buildingHead = UInt32(state.pointee.freeDescriptorHead)
    }

    /// A used element whose id is not below ``usedIDLimit``: out of range — or, under IN_ORDER,
    /// where the limit is 0, every element: the in-order take. `id` and `length` were read once
    /// from the element at `position` (the driver's next); when a batch is being taken back, that
    /// element is not one the device wrote for it, and they are ignored. Takes the state, not the
    /// queue, so that `takeUsed` never has to keep the queue in memory for it.
    ///
    /// - Throws: ``VirtqueueError`` naming the violation, which breaks the queue.
    @usableFromInline @inline(never)
    static func takeUsedOffTheUsualPath(
        _ state: UnsafeMutablePointer<DriverState>,
        id: UInt32,
        length: UInt32,
        position: UInt16
    ) throws(VirtqueueError) -> (head: UInt16, record: HeadRecord, written: Int) {
        guard state.pointee.inOrder.enabled else {
            throw state.pointee.side.breakQueue(.usedIDOutOfRange(id, size: state.pointee.ring.size))
        }
        if state.pointee.inOrder.batchEnd == position {
            try state.pointee.startInOrderBatch(id: id, length: length, position: position)
        }
        return state.pointee.retireOldestInOrder()
    }
}
