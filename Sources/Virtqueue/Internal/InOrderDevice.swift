import Synchronization

/// A completion that came before the ones made available before it, held under
/// VIRTIO_F_IN_ORDER until they complete.
@usableFromInline
internal struct HeldCompletion {
    @usableFromInline var head: UInt16 = 0
    @usableFromInline var length: UInt32 = 0
    /// Whether `length` is the request's whole writable room ("used completely").
    @usableFromInline var usedCompletely = false
    /// Whether the slot holds a completion.
    @usableFromInline var isHeld = false
    /// On the packed ring, the descriptors of the request's list, kept with the completion: once
    /// completed, its buffer ID is the driver's to reuse, and a list taken again with that ID
    /// replaces the ID's count before this completion is used.
    @usableFromInline var descriptorCount: UInt16 = 0

    @inlinable init() {}

    @inlinable init(head: UInt16, length: UInt32, usedCompletely: Bool, descriptorCount: UInt16) {
        self.head = head
        self.length = length
        self.usedCompletely = usedCompletely
        self.isHeld = true
        self.descriptorCount = descriptorCount
    }
}

/// What an in-order device (VIRTIO_F_IN_ORDER) keeps beside ``DeviceState``'s usual bookkeeping.
///
/// **Used in the order made available.** The device must use buffers in the order the driver made
/// them available (virtio 1.2 §2.7.9). `used.idx` counts the buffers used, so the next buffer to
/// use is the one taken from available position `used.idx`: each request remembers its position,
/// and a completion for a later one is held, in a slot of its own (position mod N, at most N being
/// held), until the ones before it complete — then the whole run is used, in order. Nothing is
/// allocated per request (QEMU's `virtqueue_ordered_fill` / `virtqueue_ordered_flush` do the same).
///
/// **Batches.** The device may report a run of buffers with one used element, the last one's,
/// written where the first one's would be, `used.idx` moving by the run's length; every buffer
/// before the last then counts as used completely. The device folds a buffer into the staged run
/// only when the run's last buffer so far was written completely (its whole writable room, or a
/// chain with none), and only while the run's index is not yet published: a buffer written in part
/// ends the run, so the driver never reads a length the device did not report.
///
/// The in-order paths hang off the cold branch of `nextRequest`'s head check (`headLimit` is 0)
/// and one test in `complete`.
@usableFromInline
internal struct InOrderDeviceState {
    /// Whether VIRTIO_F_IN_ORDER was negotiated.
    @usableFromInline var enabled = false
    /// The available-ring position each held head was taken from (N entries, under IN_ORDER).
    @usableFromInline var positions: UnsafeMutablePointer<UInt16>?
    /// Completions waiting for earlier ones, by position mod N (N entries, under IN_ORDER).
    @usableFromInline var held: UnsafeMutablePointer<HeldCompletion>?
    /// The position the next resubmitted request was taken from (``DeviceQueue/resubmittedRequest(head:)``).
    @usableFromInline var resubmitPosition: UInt16 = 0
    /// Where the staged run's used element is: the used position of its first buffer.
    @usableFromInline var runSlot: UInt16 = 0
    /// Whether the staged run's last buffer was used completely, so that the next may join it.
    @usableFromInline var lastUsedCompletely = false
    /// Masks a position to its held slot: N − 1 for the split ring's free-running indices (N a
    /// power of two), the index bits for the packed ring's positions (each below N).
    @usableFromInline var slotMask: UInt16 = 0

    @inlinable init() {}

    func deallocate() {
        positions?.deallocate()
        held?.deallocate()
    }
}

extension DeviceState {
    /// Turns IN_ORDER on for a device starting at `cursor`: its requests take the in-order path.
    mutating func enableInOrder(cursor: QueueCursor) {
        let size = ring.size
        inOrder.enabled = true
        let positions = UnsafeMutablePointer<UInt16>.allocate(capacity: size)
        positions.initialize(repeating: 0, count: size)
        let held = UnsafeMutablePointer<HeldCompletion>.allocate(capacity: size)
        held.initialize(repeating: HeldCompletion(), count: size)
        inOrder.positions = positions
        inOrder.held = held
        inOrder.resubmitPosition = cursor.nextUsed
        inOrder.slotMask = side.packed == nil ? ring.mask : 0x7FFF
        headLimit = 0
    }

    /// Takes the chain at `head`, read once from available position `position`, as
    /// `nextRequest`'s usual path does (the same checks and parser), and records its position.
    ///
    /// - Throws: ``VirtqueueError`` naming the violation, which breaks the queue.
    @usableFromInline @inline(__always)
    mutating func takeInOrder(head: UInt16, position: UInt16) throws(VirtqueueError) {
        let size = ring.size
        guard Int(head) < size else {
            throw side.breakQueue(.headOutOfRange(head, slot: position & ring.mask, size: size))
        }
        guard record(head).pointee.segmentCount == 0 else { throw side.breakQueue(.headAlreadyInFlight(head)) }
        try takeChain(head: head)
        side.consumed = position &+ 1
        takenCount &+= 1
        inOrder.positions.unsafelyUnwrapped[Int(head)] = position
    }

    /// Records the position of a request taken again (``DeviceQueue/resubmittedRequest(head:)``):
    /// the next of those the cursor counts in flight, in the order they are resubmitted.
    mutating func recordResubmittedInOrder(head: UInt16) {
        inOrder.positions.unsafelyUnwrapped[Int(head)] = inOrder.resubmitPosition
        inOrder.resubmitPosition &+= 1
    }

    /// Completes the request at `head` with `length` bytes written (already checked against its
    /// `writable` room) under IN_ORDER: uses it now if it is the next in order — and then every
    /// held completion that follows it — or holds it until the ones before it complete. With
    /// `publish`, stores `used.idx` for what was used (and staged before). `packed` is the ring
    /// format, a constant at each call site, so that each format's code has only its own path.
    @usableFromInline @inline(__always)
    mutating func completeInOrder(_ head: UInt16, length: UInt32, writable: Int, publish: Bool, packed: Bool = false) {
        let position = inOrder.positions.unsafelyUnwrapped[Int(head)]
        let usedCompletely = Int(length) == writable
        let held = inOrder.held.unsafelyUnwrapped
        let descriptorCount = packed ? packedListLengths.unsafelyUnwrapped[Int(head)] : 0
        guard position == side.published else {
            held[Int(position & inOrder.slotMask)] = HeldCompletion(
                head: head,
                length: length,
                usedCompletely: usedCompletely,
                descriptorCount: descriptorCount
            )
            return
        }
        useInOrder(
            head,
            length: length,
            usedCompletely: usedCompletely,
            packed: packed,
            descriptorCount: descriptorCount
        )
        while true {
            let slot = Int(side.published & inOrder.slotMask)
            let next = held[slot]
            guard next.isHeld else { break }
            held[slot].isHeld = false
            useInOrder(
                next.head,
                length: next.length,
                usedCompletely: next.usedCompletely,
                packed: packed,
                descriptorCount: next.descriptorCount
            )
        }
        if publish { side.publishStaged() }
    }

    /// Uses the next buffer in order: folds it into the staged run when the run's last buffer was
    /// used completely (the run's element now names this one), else starts a run at `used.idx`
    /// (on the packed ring, ``useInOrder(_:_:length:usedCompletely:descriptorCount:)``, with the
    /// list's `descriptorCount`; `packed` is a constant).
    @usableFromInline @inline(__always)
    mutating func useInOrder(
        _ head: UInt16,
        length: UInt32,
        usedCompletely: Bool,
        packed: Bool,
        descriptorCount: UInt16
    ) {
        if packed {
            useInOrder(
                side.packed.unsafelyUnwrapped,
                head,
                length: length,
                usedCompletely: usedCompletely,
                descriptorCount: descriptorCount
            )
            return
        }
        if !(side.hasStaged && inOrder.lastUsedCompletely) {
            inOrder.runSlot = side.published
        }
        let element = ring.usedElement(inOrder.runSlot)
        element.storeBytes(of: UInt32(head).littleEndian, as: UInt32.self)
        element.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
        side.stage()
        inOrder.lastUsedCompletely = usedCompletely
    }
}

extension DeviceState {
    /// ``useInOrder(_:length:usedCompletely:packed:descriptorCount:)`` on the packed ring (virtio 1.2 §2.8.9): a run
    /// starts with a used descriptor at the used position, staged as any other; a buffer folded
    /// into the staged run rewrites that descriptor's `id`, `len` and `WRITE` to its own, and
    /// moves the used position past its descriptors without writing them — the driver skips
    /// them by the batch's descriptor count — counting them as moves for event suppression.
    ///
    /// The run's descriptor is not visible while anything is staged: either its `flags` are the
    /// staged ones, or it follows the staged descriptor, at which the driver stops until the
    /// publication stores those `flags` with release, after every rewrite. Out of line, so that
    /// the split ring's in-order use stays as it was.
    @usableFromInline @inline(never)
    mutating func useInOrder(
        _ packed: PackedRing,
        _ head: UInt16,
        length: UInt32,
        usedCompletely: Bool,
        descriptorCount: UInt16
    ) {
        let count = Int(descriptorCount)
        defer { inOrder.lastUsedCompletely = usedCompletely }
        guard side.hasStaged && inOrder.lastUsedCompletely else {
            inOrder.runSlot = side.published
            storePackedUsedDescriptor(packed, id: head, length: length, count: count, publish: false)
            return
        }
        let run = PackedRingPosition(cursorValue: inOrder.runSlot)
        let descriptor = packed.descriptor(at: run)
        descriptor.storeBytes(of: length.littleEndian, toByteOffset: PackedRingFields.lengthOffset, as: UInt32.self)
        descriptor.storeBytes(of: head.littleEndian, toByteOffset: PackedRingFields.idOffset, as: UInt16.self)
        let flags = PackedRingFields.usedFlags(wrap: run.wrapCounter) | (length > 0 ? PackedRingFields.writeFlag : 0)
        if side.stagedFlagsAt == descriptor {
            side.stagedFlags = flags
        } else {
            (descriptor + PackedRingFields.flagsOffset).assumingMemoryBound(to: Atomic<UInt16>.self).pointee.store(
                flags.littleEndian,
                ordering: .relaxed
            )
        }
        side.published = side.publishedPosition.advanced(by: count, size: packed.size).cursorValue
        side.movesSinceNotifyCheck &+= count
    }
}
