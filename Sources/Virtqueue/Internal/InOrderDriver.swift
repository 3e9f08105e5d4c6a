/// What an in-order driver (VIRTIO_F_IN_ORDER) keeps beside ``DriverState``'s usual bookkeeping.
///
/// **Descriptors in ring order.** The spec has an in-order driver use descriptors "in ring order:
/// starting from offset 0 in the table, and wrapping around" (virtio 1.2 §2.7.5), each chain's
/// `next` being `x + 1` (`0` after `N − 1`). The driver keeps its free list for that: every link
/// in `descriptorNext` is `i + 1 mod N`, so the free descriptors are the run from
/// `freeDescriptorHead` on, a chain built alone takes the next ones in ring order, and a chain the
/// device returns — always the oldest in flight — joins the run's end with a count, its links
/// being `+1` already. A chain that is discarded goes back to the run's front, where it came from.
///
/// **One chain at a time.** Two chains built at once would take interleaved descriptors, so an
/// in-order driver builds one at a time: a chain's first segment is refused
/// (``VirtqueueError/Code-swift.struct/chainInProgress``) while another chain has segments and is
/// neither submitted nor discarded.
///
/// **Out of the hot path.** The in-order paths hang off the cold branches of the usual ones, so a
/// queue without IN_ORDER runs the path it ran before: the free count the hot path reads is kept
/// at 0 (``freeDescriptors`` holds the real one), so a chain's first append finds no descriptor
/// and asks ``DriverState/lendInOrderDescriptor(_:)``, which applies the one-chain rule and lends
/// the one descriptor the append then takes, and every further append goes to the out-of-line
/// append, which reveals the count while it runs; and `usedIDLimit` is 0, so every used element
/// fails its range check and goes to the in-order take.
@usableFromInline
internal struct InOrderDriverState {
    /// Whether VIRTIO_F_IN_ORDER was negotiated.
    @usableFromInline var enabled = false
    /// The free descriptors while ``DriverState/freeDescriptorCount`` is kept at 0 (outside an
    /// append, whose out-of-line path reveals them).
    @usableFromInline var freeDescriptors = 0
    /// Whether an append has moved ``freeDescriptors`` back into ``DriverState/freeDescriptorCount``.
    @usableFromInline var revealed = false
    /// The head of the last chain that took a first segment; it is being built unless it has
    /// been submitted (its record is in flight) or given back (``noBuffer``).
    @usableFromInline var buildingHead: UInt32 = noBuffer
    /// The head descriptor of the oldest chain in flight: the next the device returns.
    @usableFromInline var oldestHead: UInt16 = 0
    /// The used-ring position just past the batch being taken back; the driver's consumed index
    /// when none is.
    @usableFromInline var batchEnd: UInt16 = 0
    /// The batch's used element `len`: the written bytes of its last chain.
    @usableFromInline var batchLength: UInt32 = 0

    @inlinable init() {}
}

extension DriverState {
    /// Turns IN_ORDER on for a driver starting at `cursor` with every descriptor free: the free
    /// list becomes the ring-order run (the last descriptor links to 0), hidden from the hot path.
    ///
    /// On the packed ring the run starts at the ring index of the driver's position, so that a
    /// chain's head — its buffer ID — is the ring index of its first descriptor, as in Linux's
    /// and DPDK's in-order drivers (a chain takes as many ring descriptors as private ones).
    mutating func enableInOrder(cursor: QueueCursor) {
        inOrder.enabled = true
        descriptorNext[ring.size - 1] = 0
        let start = side.packed == nil ? 0 : PackedRingPosition(cursorValue: cursor.nextAvailable).index
        freeDescriptorHead = start
        inOrder.oldestHead = start
        inOrder.batchEnd = cursor.nextUsed
        inOrder.freeDescriptors = freeDescriptorCount
        freeDescriptorCount = 0
        usedIDLimit = 0
    }

    /// The descriptors a chain holds in the ring: its count for a direct chain, its head alone
    /// for an indirect one.
    @inlinable
    func descriptorSpan(_ record: HeadRecord) -> Int {
        record.indirectTable != noBuffer ? 1 : Int(record.segmentCount)
    }

    /// Moves the hidden free descriptors where the usual append code counts them.
    @usableFromInline @inline(__always)
    mutating func revealDescriptors() {
        freeDescriptorCount &+= inOrder.freeDescriptors
        inOrder.freeDescriptors = 0
        inOrder.revealed = true
    }

    /// Hides the free descriptors from the hot path again.
    @usableFromInline @inline(__always)
    mutating func hideDescriptors() {
        inOrder.freeDescriptors &+= freeDescriptorCount
        freeDescriptorCount = 0
        inOrder.revealed = false
    }

    /// Whether a chain other than one made available is being built (has segments, and was
    /// neither submitted nor given back).
    @usableFromInline
    var inOrderChainInProgress: UInt32? {
        let head = inOrder.buildingHead
        guard head != noBuffer, !heads[Int(head)].inFlight else { return nil }
        return head
    }

    /// An unsubmitted chain at `head` went back to the free lists (its descriptors to the front
    /// of the run, where they came from): hides them, and ends the chain being built.
    @usableFromInline
    mutating func inOrderReleasedUnsubmitted(head: UInt32) {
        if inOrder.buildingHead == head { inOrder.buildingHead = noBuffer }
        if !inOrder.revealed { hideDescriptors() }
    }

    /// After ``DriverQueue/convertToIndirect(head:)`` gave back the `freed` descriptors after
    /// `head` one at a time, restores the ring-order links: they are the run's front again.
    @usableFromInline
    mutating func restoreRingOrder(after head: UInt16, freed: Int) {
        guard freed > 0 else { return }
        let size = ring.size
        var descriptor = (Int(head) + 1) % size
        freeDescriptorHead = UInt16(truncatingIfNeeded: descriptor)
        for _ in 0..<freed {
            let next = (descriptor + 1) % size
            descriptorNext[descriptor] = UInt16(truncatingIfNeeded: next)
            descriptor = next
        }
    }

    /// Reads the used element at `position`, which starts a batch (``InOrderDriverState/batchEnd``
    /// is `position`): `id` and `length` were read once, from the element. Validates it — the
    /// published `used.idx` covers no more chains than are in flight, `id` names a chain in flight,
    /// that chain is the k-th oldest with k not past what `used.idx` covers, and `length` fits its
    /// writable bytes — and records the batch: the k oldest chains, the last one with `length`.
    ///
    /// - Throws: ``VirtqueueError`` naming the violation, which breaks the queue.
    @usableFromInline @inline(__always)
    mutating func startInOrderBatch(id: UInt32, length: UInt32, position: UInt16) throws(VirtqueueError) {
        let size = ring.size
        let covered = Int(side.shadow &- position)
        let inFlight = inFlightCount
        guard covered <= inFlight else {
            throw side.breakQueue(.usedPastInFlight(side.shadow, position: position, inFlight: inFlight))
        }
        guard id < UInt32(truncatingIfNeeded: size) else { throw side.breakQueue(.usedIDOutOfRange(id, size: size)) }
        let head = UInt16(truncatingIfNeeded: id)
        let record = heads[Int(head)]
        guard record.inFlight else { throw side.breakQueue(.usedIDNotInFlight(id)) }
        let batch = try inOrderBatch(reaching: head, inFlight: inFlight).chains
        guard batch <= covered else {
            throw side.breakQueue(
                .usedOutOfOrder(head, position: position, batch: batch, covered: covered, oldest: inOrder.oldestHead)
            )
        }
        guard UInt64(length) <= record.writableByteCount else {
            throw side.breakQueue(.usedLengthTooLarge(length, head: head, writable: record.writableByteCount))
        }
        inOrder.batchEnd = position &+ UInt16(truncatingIfNeeded: batch)
        inOrder.batchLength = length
    }

    /// The packed position (cursor form) `span` descriptors past `position`, out of line for the
    /// split ring's sake.
    @usableFromInline @inline(never)
    static func packedPosition(_ position: UInt16, advancedBy span: Int, size: Int) -> UInt16 {
        PackedRingPosition(cursorValue: position).advanced(by: span, size: size).cursorValue
    }

    /// The batch a used entry naming `head` covers: the named chain's place among the `inFlight`
    /// chains in flight, oldest first (1 for the oldest), and the descriptors of those chains —
    /// they hold the ring's descriptors in order from the oldest's head.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/usedIDNotInFlight`` if `head` is not among them.
    @usableFromInline @inline(__always)
    mutating func inOrderBatch(
        reaching head: UInt16,
        inFlight: Int
    ) throws(VirtqueueError) -> (chains: Int, descriptors: Int) {
        let size = ring.size
        var candidate = inOrder.oldestHead
        var batch = 1
        var descriptors = 0
        while candidate != head {
            guard batch < inFlight else { throw side.breakQueue(.usedIDNotInFlight(UInt32(head))) }
            let span = descriptorSpan(heads[Int(candidate)])
            descriptors &+= span
            candidate = UInt16(truncatingIfNeeded: (Int(candidate) + span) % size)
            batch += 1
        }
        return (batch, descriptors &+ descriptorSpan(heads[Int(candidate)]))
    }

    /// Takes back the oldest chain in flight, which the current batch covers: its descriptors
    /// join the free run's end, its table buffer the pool. The driver's position moves past it:
    /// one used element on the split ring, its descriptors on the packed ring (`packed`, a
    /// constant at each call site).
    ///
    /// - Returns: The chain's record and the bytes written: the batch's `len` for its last chain,
    ///   the chain's writable bytes for the others ("used completely", virtio 1.2 §2.7.9).
    @usableFromInline @inline(__always)
    mutating func retireOldestInOrder(packed: Bool = false) -> (head: UInt16, record: HeadRecord, written: Int) {
        let head = inOrder.oldestHead
        let record = heads[Int(head)]
        let span = descriptorSpan(record)
        let position = side.consumed
        let next = packed ? Self.packedPosition(position, advancedBy: span, size: ring.size) : position &+ 1
        let written = next == inOrder.batchEnd ? Int(inOrder.batchLength) : Int(record.writableByteCount)
        side.consumed = next
        heads[Int(head)].inFlight = false
        if record.indirectTable != noBuffer { pushBuffer(record.indirectTable) }
        if inOrder.revealed { freeDescriptorCount &+= span } else { inOrder.freeDescriptors &+= span }
        inOrder.oldestHead = UInt16(truncatingIfNeeded: (Int(head) + span) % ring.size)
        if inOrder.buildingHead == UInt32(head) { inOrder.buildingHead = noBuffer }
        return (head, record, written)
    }
}
