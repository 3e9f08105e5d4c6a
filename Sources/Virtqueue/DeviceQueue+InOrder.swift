/// The device's VIRTIO_F_IN_ORDER entry points (``InOrderDeviceState``), reached from the cold
/// branches of `nextRequest` and `complete`. They take the state, not the queue, so that the hot
/// path never has to keep the queue in memory for them.
extension DeviceState {
    /// An available entry whose head is not below ``headLimit``: out of range — or, under
    /// IN_ORDER, where the limit is 0, every entry: the in-order take, which records the request's
    /// position. `head` was read once from available position `position`.
    ///
    /// - Throws: ``VirtqueueError`` naming the violation, which breaks the queue.
    @usableFromInline @inline(never)
    static func takeRequestOffTheUsualPath(
        _ state: UnsafeMutablePointer<DeviceState>,
        head: UInt16,
        position: UInt16
    ) throws(VirtqueueError) {
        guard state.pointee.inOrder.enabled else {
            let size = state.pointee.ring.size
            throw state.pointee.side.breakQueue(
                .headOutOfRange(head, slot: position & state.pointee.ring.mask, size: size)
            )
        }
        try state.pointee.takeInOrder(head: head, position: position)
    }

    /// The rest of `DeviceQueue.complete(_:written:publish:)`, once the request has been given
    /// back, for a written length out of range (the request is completed with 0 bytes written)
    /// and for every completion under IN_ORDER, which uses the request or holds it until the
    /// requests made available before it complete.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/writtenLengthTooLarge`` if `written` is out of
    ///   range.
    @usableFromInline @inline(never)
    mutating func completeOffTheUsualPath(_ id: UInt16, written: Int, writable: Int, publish: Bool)
        throws(VirtqueueError)
    {
        let valid = written >= 0 && written <= writable
        let length = valid ? UInt32(written) : 0
        if inOrder.enabled {
            completeInOrder(id, length: length, writable: writable, publish: publish)
        } else {
            let element = ring.usedElement(side.published)
            element.storeBytes(of: UInt32(id).littleEndian, as: UInt32.self)
            element.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
            if publish { side.publish() } else { side.stage() }
        }
        guard valid else {
            side.publishStaged()
            throw .writtenLengthTooLarge(written, writable: writable, request: id)
        }
    }
}
