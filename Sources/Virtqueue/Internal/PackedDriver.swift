/// The driver's side of the packed ring (virtio 1.2 §2.8, `docs/wire-format.md` §12.3): making a
/// chain available at its position, and taking used buffers back at its used position.
///
/// A packed chain is built exactly as a split one: each append takes a descriptor (so at most N
/// are ever in use, which is the room the packed ring has) and a pool buffer, and writes a
/// split-format descriptor into the queue's private table (``DriverState/ring``), which nothing
/// shared reads. The chain's head descriptor index is its buffer ID: below N, and not in flight,
/// since the head is held until the chain comes back. ``submitPacked(head:publish:)`` writes the
/// ring from the chain's private records, at consecutive positions from the driver's.
extension DriverState {
    /// ``submit(_:publish:)`` on the packed ring: writes the chain's descriptors at the driver's
    /// position — every one but the first completely, then the first's `flags` with release
    /// (or, staged, at the next publication) — with the buffer ID on each, and moves the
    /// position on by their number. An indirect chain is one ring descriptor with INDIRECT,
    /// pointing at its table, which is rewritten here in the packed format.
    @usableFromInline @inline(never)
    mutating func submitPacked(head: UInt16, poolStart: UInt64, bufferSize: Int, publish: Bool) {
        let packed = side.packed.unsafelyUnwrapped
        /// The descriptor of pool buffer `buffer`, described by `record` (as the split appends write it).
        func descriptor(_ buffer: UInt32, _ record: BufferRecord, next: UInt16?) -> Descriptor {
            Descriptor(pool: poolStart, bufferSize: bufferSize, buffer: buffer, record: record, next: next)
        }
        let record = heads[Int(head)]
        let start = side.publishedPosition
        let segments = Int(record.segmentCount)
        var first = PackedDescriptor(address: 0, length: 0, id: head, flags: 0)
        var count = 1
        if record.indirectTable != noBuffer {
            let entries = buffers[Int(record.indirectTable)].host.unsafelyUnwrapped
            var buffer = record.firstBuffer
            for index in 0..<segments {
                let segment = buffers[Int(buffer)]
                let element = descriptor(buffer, segment, next: nil)
                PackedDescriptor(address: element.address, length: element.length, id: 0, flags: element.flags)
                    .storeFields(to: entries + index &* PackedRingFields.descriptorByteCount, withFlags: true)
                buffer = segment.next
            }
            first.address =
                descriptor(record.indirectTable, buffers[Int(record.indirectTable)], next: nil)
                .address
            first.length = UInt32(truncatingIfNeeded: segments &* PackedRingFields.descriptorByteCount)
            first.flags = PackedRingFields.indirectFlag | PackedRingFields.availableFlags(wrap: start.wrapCounter)
        } else {
            count = segments
            var position = start
            var buffer = record.firstBuffer
            for index in 0..<segments {
                let segment = buffers[Int(buffer)]
                let element = descriptor(buffer, segment, next: index &+ 1 < segments ? 0 : nil)
                let written = PackedDescriptor.available(
                    address: element.address,
                    length: element.length,
                    id: head,
                    elementFlags: element.flags,
                    wrap: position.wrapCounter
                )
                if index == 0 {
                    first = written
                } else {
                    written.store(to: packed.descriptor(at: position))
                }
                position = position.advanced(by: 1, size: packed.size)
                buffer = segment.next
            }
        }
        let pointer = packed.descriptor(at: start)
        first.storeFields(to: pointer, withFlags: false)
        side.publishPacked(flags: first.flags, at: pointer, count: count, size: packed.size, publish: publish)
        heads[Int(head)].inFlight = true
        packedInFlightCount &+= 1
    }

    /// The used descriptor at the driver's used position, validated, and the chain it returns
    /// retired (``DriverQueue/takeUsed()`` on the packed ring): its buffer ID, the bytes written,
    /// and its record; `nil` when the device has not used a buffer there. The position moves on
    /// by the chain's descriptor count. Under IN_ORDER, ``takePackedUsedInOrder()``.
    @usableFromInline @inline(never)
    mutating func takePackedUsedEntry() throws(VirtqueueError) -> (UInt16, Int, HeadRecord)? {
        if inOrder.enabled { return try takePackedUsedInOrder() }
        guard let (id, written, record) = try readPackedUsed() else { return nil }
        let next = side.consumedPosition.advanced(by: descriptorSpan(record), size: ring.size).cursorValue
        side.consumed = next
        side.shadow = next
        packedInFlightCount &-= 1
        retire(id, record)
        return (id, Int(written), record)
    }

    /// Reads the descriptor at the driver's used position once (`flags` with acquire, then `id`
    /// and `len`) and validates it: used for the driver's wrap counter, its ID a buffer in
    /// flight, its length (with `WRITE`) within the buffer's writable bytes.
    ///
    /// - Returns: The buffer ID, the bytes written and the chain's record; `nil` when the device
    ///   has not used a buffer there.
    /// - Throws: ``VirtqueueError`` naming the violation, which breaks the queue.
    @inlinable @inline(__always)
    mutating func readPackedUsed() throws(VirtqueueError) -> (UInt16, UInt32, HeadRecord)? {
        let packed = side.packed.unsafelyUnwrapped
        let position = side.consumedPosition
        let pointer = packed.descriptor(at: position)
        // A chain staged at this position has not been shown to the device: nothing is here yet.
        if side.stagedFlagsAt == pointer { return nil }
        let flags = QueueSide.loadFlags(packed, at: position)
        let inFlight = packedInFlightCount
        guard PackedRingFields.isUsed(flags, wrap: position.wrapCounter) else {
            // With a chain in flight here, the driver wrote this descriptor available on this
            // lap; only the device's used descriptor may replace it.
            if inFlight > 0 && !PackedRingFields.isAvailable(flags, wrap: position.wrapCounter) {
                throw side.breakQueue(.wrapCounterMismatch(flags: flags, at: position, expecting: "used"))
            }
            return nil
        }
        guard inFlight > 0 else { throw side.breakQueue(.usedPastInFlight(at: position)) }
        let raw = UnsafeRawPointer(pointer)
        let id = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: PackedRingFields.idOffset, as: UInt16.self))
        let length = UInt32(
            littleEndian: raw.loadUnaligned(fromByteOffset: PackedRingFields.lengthOffset, as: UInt32.self)
        )
        let size = packed.size
        guard Int(id) < size else { throw side.breakQueue(.usedIDOutOfRange(UInt32(id), size: size)) }
        let record = heads[Int(id)]
        guard record.inFlight else { throw side.breakQueue(.usedIDNotInFlight(UInt32(id))) }
        // Without WRITE, `len` is reserved: the device wrote nothing.
        let written = flags & PackedRingFields.writeFlag != 0 ? length : 0
        guard UInt64(written) <= record.writableByteCount else {
            throw side.breakQueue(.usedLengthTooLarge(written, head: id, writable: record.writableByteCount))
        }
        return (id, written, record)
    }
}

/// VIRTIO_F_IN_ORDER on the packed ring (virtio 1.2 §2.8.9, `docs/wire-format.md` §12.8): the
/// device may use a batch of buffers with one used descriptor, the batch's last buffer ID,
/// written at the batch's first position, and skip its used position past the batch's
/// descriptors. The driver takes the batch back one chain at a time, as on the split ring
/// (``InOrderDriverState``); the driver's `side.shadow` holds the position past the batch, as
/// the split ring's holds the last `used.idx` read: the chains before it are taken without
/// reading the ring again, and a wait returns at once while any is left. (Without IN_ORDER it
/// follows `consumed`.)
extension DriverState {
    /// ``takePackedUsedEntry()`` under IN_ORDER: the next chain of the batch being taken back,
    /// or — when none is — the batch the used descriptor at the driver's position reports
    /// (``startPackedInOrderBatch(id:written:)``) and its first chain. Out of line, so that the
    /// usual packed take stays small.
    @usableFromInline @inline(never)
    mutating func takePackedUsedInOrder() throws(VirtqueueError) -> (UInt16, Int, HeadRecord)? {
        if side.shadow == side.consumed {
            guard let (id, written, _) = try readPackedUsed() else { return nil }
            try startPackedInOrderBatch(id: id, written: written)
        }
        let taken = retireOldestInOrder(packed: true)
        packedInFlightCount &-= 1
        return (taken.head, taken.written, taken.record)
    }

    /// Records the batch a valid used descriptor at the driver's position reports: the chains
    /// in flight from the oldest to the one named `id`, the last with `written` bytes. The batch
    /// may hold only descriptors the driver made available: none of a chain staged and not yet
    /// published, which the device cannot have seen.
    ///
    /// - Throws: ``VirtqueueError`` naming the violation, which breaks the queue:
    ///   ``VirtqueueError/Code-swift.struct/usedPastInFlight`` for a batch that reaches a staged
    ///   chain.
    mutating func startPackedInOrderBatch(id: UInt16, written: UInt32) throws(VirtqueueError) {
        let packed = side.packed.unsafelyUnwrapped
        let start = side.consumedPosition
        let (batch, descriptors) = try inOrderBatch(reaching: id, inFlight: packedInFlightCount)
        // The descriptors made available from the driver's position: up to the first staged
        // chain's (never at the position itself: the read found it not staged), else all.
        if let staged = side.stagedFlagsAt {
            let index = (staged - packed.descriptors) / PackedRingFields.descriptorByteCount
            let available = (index &- Int(start.index) &+ packed.size) % packed.size
            guard descriptors <= available else {
                throw side.breakQueue(
                    .usedPastAvailable(id, at: start, batch: batch, descriptors: descriptors, available: available)
                )
            }
        }
        let end = start.advanced(by: descriptors, size: packed.size).cursorValue
        inOrder.batchEnd = end
        inOrder.batchLength = written
        side.shadow = end
    }
}

extension Descriptor {
    /// The descriptor that offers pool buffer `buffer` (described by `record`) of a pool that
    /// starts at bus address `pool`, in slots of `bufferSize`; chained to `next` unless it is
    /// the chain's last. The buffer's bus address, `pool + buffer · bufferSize`, is the one its
    /// record keeps from set-up.
    @inlinable @inline(__always)
    init(pool: UInt64, bufferSize: Int, buffer: UInt32, record: BufferRecord, next: UInt16?) {
        self.init(
            address: record.address,
            length: record.length,
            flags: (record.flags & BufferRecord.writableFlag != 0 ? Descriptor.writeFlag : 0)
                | (next == nil ? 0 : Descriptor.nextFlag),
            next: next ?? 0
        )
    }
}

extension PackedDescriptor {
    /// Writes `addr`, `len` and `id` at `pointer`, and `flags` too when `withFlags` (a plain
    /// store: for an indirect table, which the ring descriptor's release publishes), so that the
    /// first descriptor of a list can have its `flags` written last, with release.
    @inlinable
    func storeFields(to pointer: UnsafeMutableRawPointer, withFlags: Bool) {
        pointer.storeBytes(of: address.littleEndian, toByteOffset: PackedRingFields.addressOffset, as: UInt64.self)
        pointer.storeBytes(of: length.littleEndian, toByteOffset: PackedRingFields.lengthOffset, as: UInt32.self)
        pointer.storeBytes(of: id.littleEndian, toByteOffset: PackedRingFields.idOffset, as: UInt16.self)
        if withFlags {
            pointer.storeBytes(of: flags.littleEndian, toByteOffset: PackedRingFields.flagsOffset, as: UInt16.self)
        }
    }
}

extension VirtqueueError {
    static func usedPastAvailable(
        _ id: UInt16,
        at position: PackedRingPosition,
        batch: Int,
        descriptors: Int,
        available: Int
    ) -> VirtqueueError {
        VirtqueueError(
            .usedPastInFlight,
            "the used descriptor at \(position) names buffer ID \(id), which ends a batch of \(batch) chains and \(descriptors) descriptors, but only \(available) descriptors from there were made available (the rest are staged): the device used buffers it cannot have seen"
        )
    }

    @usableFromInline @inline(never)
    static func usedPastInFlight(at position: PackedRingPosition) -> VirtqueueError {
        VirtqueueError(
            .usedIndexJump,
            "descriptor \(position.index) is marked used for wrap counter \(position.wrapCounter ? 1 : 0), but no chain is in flight: the used position passed what the driver made available"
        )
    }
}
