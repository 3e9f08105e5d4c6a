/// The device's side of the packed ring (virtio 1.2 §2.8, `docs/wire-format.md` §12.3): taking
/// a list of descriptors at its position, and using a buffer at its used position.
///
/// A list is read from the ring once, each descriptor's `flags` with acquire ordering, into the
/// device's private split-format table (``DeviceState/ring``) at its ring position, with `next`
/// naming the following position; the one chain validator (``takeChain(head:first:)``) then
/// checks and records it exactly as it does a split chain, so every rule of
/// `docs/trust-model.md` is applied by the same code. What only the packed ring has — each
/// descriptor available for the wrap counter at its position, at most N of them, the buffer ID
/// on the last — is checked here, as the list is copied.
extension DeviceState {
    /// ``DeviceQueue/nextRequest()`` once the queue is diverted (``QueueSide/diverted``): reports
    /// the break, or on the packed ring takes the list at the device's position
    /// (``takePackedBuffer()``) as a request.
    @usableFromInline @inline(never)
    static func nextDivertedRequest(_ state: UnsafeMutablePointer<DeviceState>) throws(VirtqueueError)
        -> DeviceRequest?
    {
        try state.pointee.side.checkUsable()
        guard let id = try state.pointee.takePackedBuffer() else { return nil }
        state.pointee.takenCount &+= 1
        return DeviceRequest(id: id, state: state)
    }

    /// Takes the list available at the device's position, if the driver has made one available:
    /// copies and validates it, holds it at its buffer ID, and moves the position past it.
    ///
    /// - Returns: The buffer ID, or `nil` when the descriptor at the position is not available.
    /// - Throws: ``VirtqueueError`` naming the violation, which breaks the queue (or
    ///   ``VirtqueueError/Code-swift.struct/segmentStoreExhausted``, which does not: the position
    ///   does not move, and the list is read again on the next call).
    mutating func takePackedBuffer() throws(VirtqueueError) -> UInt16? {
        let packed = side.packed.unsafelyUnwrapped
        let start = side.consumedPosition
        let size = ring.size
        var flags = QueueSide.loadFlags(packed, at: start)
        guard PackedRingFields.isAvailable(flags, wrap: start.wrapCounter) else {
            // Last lap's descriptors (available or used with the other wrap counter) mean
            // nothing yet. Used with this lap's counter is what only the device writes, behind
            // its own position: no legal ring holds it here.
            guard !PackedRingFields.isUsed(flags, wrap: start.wrapCounter) else {
                throw side.breakQueue(.wrapCounterMismatch(flags: flags, at: start, expecting: "available"))
            }
            return nil
        }
        // The driver may make available only descriptors the device has used: at most N
        // between the used position and the end of the list. A list over a position still in
        // flight (a lap ahead of the used position) is refused, or the device would hold two
        // lists at one position.
        let room = size &- start.distance(from: side.publishedPosition, size: size)
        var position = start
        var count = 0
        var id: UInt16 = 0
        while true {
            let pointer = UnsafeRawPointer(packed.descriptor(at: position))
            let element =
                flags & (PackedRingFields.nextFlag | PackedRingFields.writeFlag | PackedRingFields.indirectFlag)
            if count > 0 && element & PackedRingFields.indirectFlag != 0 {
                throw side.breakQueue(.indirectInsideList(at: position))
            }
            count &+= 1
            guard count <= room else {
                throw side.breakQueue(
                    .packedListPastInFlight(from: start, count: count, inFlight: size &- room, size: size)
                )
            }
            let next = position.advanced(by: 1, size: size)
            Descriptor(
                address: UInt64(littleEndian: pointer.loadUnaligned(as: UInt64.self)),
                length: UInt32(
                    littleEndian: pointer.loadUnaligned(fromByteOffset: PackedRingFields.lengthOffset, as: UInt32.self)
                ),
                flags: element,
                next: next.index
            ).store(to: ring.descriptor(position.index))
            // INDIRECT with NEXT is left to the validator, which names it.
            guard element & PackedRingFields.nextFlag != 0, element & PackedRingFields.indirectFlag == 0 else {
                id = UInt16(
                    littleEndian: pointer.loadUnaligned(fromByteOffset: PackedRingFields.idOffset, as: UInt16.self)
                )
                break
            }
            guard count < size else { throw side.breakQueue(.peerChainTooLong(size: size)) }
            position = next
            flags = QueueSide.loadFlags(packed, at: position)
            guard PackedRingFields.isAvailable(flags, wrap: position.wrapCounter) else {
                throw side.breakQueue(.descriptorNotAvailable(flags: flags, at: position, listFrom: start))
            }
        }
        guard Int(id) < size else { throw side.breakQueue(.bufferIDOutOfRange(id, at: position, size: size)) }
        guard record(id).pointee.segmentCount == 0 else { throw side.breakQueue(.headAlreadyInFlight(id)) }
        try takeChain(head: id, first: start.index)
        packedListLengths.unsafelyUnwrapped[Int(id)] = UInt16(truncatingIfNeeded: count)
        // Under IN_ORDER the buffer's turn is the position of its first descriptor: the used
        // position reaches it once every buffer before it is used.
        if let positions = inOrder.positions { positions[Int(id)] = start.cursorValue }
        side.consumed = start.advanced(by: count, size: size).cursorValue
        return id
    }

    /// Uses buffer `id`, whose request had `writable` bytes of room and `length` written:
    /// ``storePackedUsedDescriptor(_:id:length:count:publish:)``, or under IN_ORDER in its turn
    /// (``completeInOrder(_:length:writable:publish:)``).
    @usableFromInline @inline(never)
    mutating func storePackedUsed(id: UInt16, length: UInt32, writable: Int, publish: Bool) {
        let packed = side.packed.unsafelyUnwrapped
        if inOrder.enabled {
            completePackedInOrder(id, length: length, writable: writable, publish: publish)
            return
        }
        storePackedUsedDescriptor(
            packed,
            id: id,
            length: length,
            count: Int(packedListLengths.unsafelyUnwrapped[Int(id)]),
            publish: publish
        )
    }

    /// ``completeInOrder(_:length:writable:publish:)``, out of line, so that the usual packed
    /// completion stays small.
    @usableFromInline @inline(never)
    mutating func completePackedInOrder(_ id: UInt16, length: UInt32, writable: Int, publish: Bool) {
        completeInOrder(id, length: length, writable: writable, publish: publish, packed: true)
    }

    /// Writes `{id, len}` at the used position and publishes (or stages) the descriptor's
    /// `flags` — `WRITE` when `length` is non-zero, `AVAIL` and `USED` equal to the wrap counter
    /// there — with release ordering; the used position moves on by `count`, the buffer's list
    /// length.
    @inlinable @inline(__always)
    mutating func storePackedUsedDescriptor(
        _ packed: PackedRing,
        id: UInt16,
        length: UInt32,
        count: Int,
        publish: Bool
    ) {
        let position = side.publishedPosition
        let descriptor = packed.descriptor(at: position)
        descriptor.storeBytes(of: length.littleEndian, toByteOffset: PackedRingFields.lengthOffset, as: UInt32.self)
        descriptor.storeBytes(of: id.littleEndian, toByteOffset: PackedRingFields.idOffset, as: UInt16.self)
        let flags =
            PackedRingFields.usedFlags(wrap: position.wrapCounter) | (length > 0 ? PackedRingFields.writeFlag : 0)
        side.publishPacked(
            flags: flags,
            at: descriptor,
            count: count,
            size: packed.size,
            publish: publish
        )
    }
}

extension Descriptor {
    /// Entry `index` of a packed indirect table of `count` entries, read once, in the split form
    /// the validator walks: its `WRITE` and `INDIRECT` (which the validator refuses), `NEXT` on
    /// every entry but the last, and `next` the following entry (§2.8.7: the table is used
    /// first to last; every other flag and the `id` are reserved and ignored).
    @inlinable
    init(packedTableEntry pointer: UnsafeMutableRawPointer, at index: Int, of count: Int) {
        let raw = UnsafeRawPointer(pointer)
        let flags = UInt16(
            littleEndian: raw.loadUnaligned(fromByteOffset: PackedRingFields.flagsOffset, as: UInt16.self)
        )
        let more = index &+ 1 < count
        self.init(
            address: UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self)),
            length: UInt32(
                littleEndian: raw.loadUnaligned(fromByteOffset: PackedRingFields.lengthOffset, as: UInt32.self)
            ),
            flags: flags & (PackedRingFields.writeFlag | PackedRingFields.indirectFlag)
                | (more ? PackedRingFields.nextFlag : 0),
            next: UInt16(truncatingIfNeeded: index &+ 1)
        )
    }
}

extension VirtqueueError {
    static func packedResubmission(_ head: UInt16) -> VirtqueueError {
        VirtqueueError(
            .featureNotSupported,
            "resubmitting head \(head): a packed ring's descriptors are not kept after the device takes them, so a resumed packed queue cannot take a request again from its head"
        )
    }

    @usableFromInline @inline(never)
    static func wrapCounterMismatch(flags: UInt16, at position: PackedRingPosition, expecting: String)
        -> VirtqueueError
    {
        VirtqueueError(
            .wrapCounterMismatch,
            "descriptor \(position.index) has flags 0x\(String(flags, radix: 16)) (AVAIL \(flags >> 7 & 1), USED \(flags >> 15)), which no legal ring holds at the position \(position) where the \(expecting) descriptor is expected"
        )
    }

    @usableFromInline @inline(never)
    static func descriptorNotAvailable(
        flags: UInt16,
        at position: PackedRingPosition,
        listFrom start: PackedRingPosition
    )
        -> VirtqueueError
    {
        VirtqueueError(
            .descriptorNotAvailable,
            "the list from descriptor \(start.index) continues (NEXT) into descriptor \(position.index), whose flags 0x\(String(flags, radix: 16)) do not make it available for wrap counter \(position.wrapCounter ? 1 : 0): the list has no end"
        )
    }

    @usableFromInline @inline(never)
    static func indirectInsideList(at position: PackedRingPosition) -> VirtqueueError {
        VirtqueueError(
            .indirectWithNext,
            "descriptor \(position.index) is INDIRECT but follows another descriptor of its list; an indirect descriptor must be alone"
        )
    }

    @usableFromInline @inline(never)
    static func bufferIDOutOfRange(_ id: UInt16, at position: PackedRingPosition, size: Int) -> VirtqueueError {
        VirtqueueError(
            .headOutOfRange,
            "descriptor \(position.index) names buffer ID \(id), not below the queue size \(size)"
        )
    }
}
