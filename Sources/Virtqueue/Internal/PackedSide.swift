public import CVirtqueueRelax
public import Synchronization

/// The packed ring's half of the per-side state machine (``QueueSide``), virtio 1.2 §2.8 and
/// `docs/wire-format.md` §12: what differs from the split ring when a side publishes and
/// consumes descriptors of one ring instead of two indices. `published` and `consumed` hold
/// positions with their wrap counters, in the cursor form (``PackedRingPosition/cursorValue``);
/// the moves since the last notification check count descriptors.
extension QueueSide {
    /// The position this side writes next: the driver's next available descriptor, the
    /// device's next used one.
    @inlinable var publishedPosition: PackedRingPosition { PackedRingPosition(cursorValue: published) }

    /// The position this side reads next: the device's next available descriptor, the
    /// driver's next used one.
    @inlinable var consumedPosition: PackedRingPosition { PackedRingPosition(cursorValue: consumed) }

    /// Loads the `flags` of the descriptor at `position` once, with acquire ordering: the peer
    /// wrote them last, with release, so the rest of the descriptor is visible after this.
    @inlinable @inline(__always)
    static func loadFlags(_ packed: PackedRing, at position: PackedRingPosition) -> UInt16 {
        let field = packed.descriptor(at: position) + PackedRingFields.flagsOffset
        return UInt16(
            littleEndian: field.assumingMemoryBound(to: Atomic<UInt16>.self).pointee.load(ordering: .acquiring)
        )
    }

    /// The bits of a descriptor's `flags` that say the peer has written at this side's position,
    /// and their value for wrap counter `wrap`. The driver waits for a used descriptor (`AVAIL`
    /// and `USED` both equal to its wrap counter). The device waits for `AVAIL` to equal its wrap
    /// counter: an available descriptor, or (`USED` too) one no legal ring holds there, which
    /// the taking call reports. The legal idle states — last lap's descriptors — show neither.
    @inlinable @inline(__always)
    func packedEntryBits(wrap: Bool) -> (mask: UInt16, value: UInt16) {
        let mask =
            isDriver ? PackedRingFields.availableFlag | PackedRingFields.usedFlag : PackedRingFields.availableFlag
        return (mask, wrap ? mask : 0)
    }

    /// Whether the peer has written at this side's position (``packedEntryBits(wrap:)``) — or,
    /// for an in-order driver taking a batch back (its `shadow` past `consumed`; the driver
    /// keeps the two equal otherwise, the device does not use `shadow`), has already.
    @inlinable
    func packedEntryVisible(_ packed: PackedRing) -> Bool {
        if isDriver && shadow != consumed { return true }
        let position = consumedPosition
        let bits = packedEntryBits(wrap: position.wrapCounter)
        return Self.loadFlags(packed, at: position) & bits.mask == bits.value
    }

    /// The wait's spin on the packed ring: the `flags` of the descriptor at this side's
    /// position, polled `spins` times with the CPU's spin-wait hint. Returns whether the peer
    /// wrote there (at once while an in-order driver takes a batch back).
    @inlinable
    func spinForPackedEntry(_ packed: PackedRing, spins: Int) -> Bool {
        if isDriver && shadow != consumed { return true }
        let position = consumedPosition
        let bits = packedEntryBits(wrap: position.wrapCounter)
        let field = (packed.descriptor(at: position) + PackedRingFields.flagsOffset)
            .assumingMemoryBound(to: Atomic<UInt16>.self)
        var remaining = spins
        while remaining > 0 {
            if UInt16(littleEndian: field.pointee.load(ordering: .acquiring)) & bits.mask == bits.value { return true }
            vq_cpu_relax()
            remaining &-= 1
        }
        return false
    }

    /// Publishes — or, without `publish`, stages — a list of `count` descriptors this side has
    /// written at its position, all but the first's `flags` (`flags`, stored at `first`). The
    /// first list's `flags` go last, with release ordering, so a peer that sees them sees the
    /// whole list (§2.8.21.1). A staged list's `flags` wait for ``publishStaged()``; a list
    /// written after a staged one is published at once, which shows nothing early: the peer
    /// reads in ring order and stops at the staged list's first descriptor.
    @inlinable @inline(__always)
    mutating func publishPacked(
        flags: UInt16,
        at first: UnsafeMutableRawPointer,
        count: Int,
        size: Int,
        publish: Bool
    ) {
        published = publishedPosition.advanced(by: count, size: size).cursorValue
        movesSinceNotifyCheck &+= count
        if hasStaged || publish {
            (first + PackedRingFields.flagsOffset).assumingMemoryBound(to: Atomic<UInt16>.self).pointee.store(
                flags.littleEndian,
                ordering: .releasing
            )
            if publish { publishStaged() }
            return
        }
        stagedFlags = flags
        stagedFlagsAt = first
        hasStaged = true
    }

    /// Stores the staged list's `flags` at `first`, with release ordering (``publishStaged()``).
    @usableFromInline
    mutating func publishStagedFlags(_ first: UnsafeMutableRawPointer) {
        (first + PackedRingFields.flagsOffset).assumingMemoryBound(to: Atomic<UInt16>.self).pointee.store(
            stagedFlags.littleEndian,
            ordering: .releasing
        )
        stagedFlagsAt = nil
    }

    /// The notify decision of `docs/wire-format.md` §12.5 for the `moves` descriptors published
    /// since the last check, after the full fence between those stores and the load of the
    /// peer's event-suppression structure.
    @usableFromInline
    func packedPeerNeedsNotification(_ packed: PackedRing, moves: Int) -> Bool {
        guard moves > 0 else { return false }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let event = PackedEventSuppression(loadingFrom: packed.event(writtenByDriver: !isDriver))
        return event.needsNotification(new: publishedPosition, moves: moves, size: packed.size)
    }

    /// Asks the peer to notify this side once it writes at this side's position: `DESC` with
    /// that position under EVENT_IDX, else `ENABLE`; then the full fence of the wait protocol.
    @usableFromInline
    func enablePackedNotifications(_ packed: PackedRing) {
        let event: PackedEventSuppression = eventIndex ? .descriptor(consumedPosition) : .enable
        event.store(to: packed.event(writtenByDriver: isDriver))
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }
}
