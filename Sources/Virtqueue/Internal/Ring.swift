public import Synchronization

/// A descriptor as read once from shared memory into a local: `{le64 addr, le32 len, le16 flags, le16 next}`.
@usableFromInline
internal struct Descriptor {
    @usableFromInline static let nextFlag: UInt16 = 1
    @usableFromInline static let writeFlag: UInt16 = 2
    @usableFromInline static let indirectFlag: UInt16 = 4
    @usableFromInline static let byteCount = 16

    @usableFromInline var address: UInt64
    @usableFromInline var length: UInt32
    @usableFromInline var flags: UInt16
    @usableFromInline var next: UInt16

    @inlinable
    init(address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        self.address = address
        self.length = length
        self.flags = flags
        self.next = next
    }

    /// Reads the descriptor at `offset` once. The caller has checked that 16 bytes fit.
    @inlinable
    init(loadingFrom base: UnsafeMutableRawPointer, at offset: Int) {
        let pointer = UnsafeRawPointer(base + offset)
        address = UInt64(littleEndian: pointer.loadUnaligned(as: UInt64.self))
        length = UInt32(littleEndian: pointer.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        flags = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        next = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
    }

    @inlinable
    func store(to base: UnsafeMutableRawPointer, at offset: Int) {
        let pointer = base + offset
        pointer.storeBytes(of: address.littleEndian, as: UInt64.self)
        pointer.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        pointer.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        pointer.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }
}

/// The flag value both rings use to suppress the peer's notifications
/// (`VIRTQ_AVAIL_F_NO_INTERRUPT` and `VIRTQ_USED_F_NO_NOTIFY` are both 1).
@usableFromInline
internal let suppressNotificationsFlag: UInt16 = 1

/// The byte offsets of one split virtqueue's fields, computed once from a validated layout.
///
/// Both sides use this one description of the ring; nothing else computes ring offsets.
@usableFromInline
internal struct RingGeometry: Sendable {
    /// Queue size N.
    @usableFromInline let size: Int
    /// N − 1, for masking free-running indices.
    @usableFromInline let mask: UInt16
    @usableFromInline let descriptorTable: Int
    @usableFromInline let availableFlags: Int
    @usableFromInline let availableIndex: Int
    @usableFromInline let availableRing: Int
    @usableFromInline let usedEvent: Int
    @usableFromInline let usedFlags: Int
    @usableFromInline let usedIndex: Int
    @usableFromInline let usedRing: Int
    @usableFromInline let availableEvent: Int
    /// The data area, as bus addresses (region offsets): every buffer must lie inside.
    @usableFromInline let dataStart: UInt64
    @usableFromInline let dataEnd: UInt64

    init(layout: RegionLayout, queue: QueueLayout) {
        size = queue.size
        mask = UInt16(truncatingIfNeeded: queue.size - 1)
        descriptorTable = queue.descriptorTableOffset
        availableFlags = queue.availableRingOffset
        availableIndex = queue.availableRingOffset + 2
        availableRing = queue.availableRingOffset + 4
        usedEvent = queue.availableRingOffset + 4 + 2 * queue.size
        usedFlags = queue.usedRingOffset
        usedIndex = queue.usedRingOffset + 2
        usedRing = queue.usedRingOffset + 4
        availableEvent = queue.usedRingOffset + 4 + 8 * queue.size
        dataStart = UInt64(layout.dataAreaOffset)
        dataEnd = UInt64(layout.dataAreaOffset + layout.dataAreaSize)
    }

    /// Whether `[address, address + length)` lies inside the data area, without overflow.
    @inlinable
    func dataAreaContains(address: UInt64, length: UInt64) -> Bool {
        address >= dataStart && address <= dataEnd && length <= dataEnd &- address
    }
}

/// One side's view of the index and notification-suppression fields.
///
/// The driver publishes `avail.idx`, suppresses the device's interrupts with `avail.flags` /
/// `used_event`, and reads the device's `used.idx`, `used.flags` and `avail_event`. The device
/// is the mirror image. Expressing both as an `Endpoint` gives one implementation of the
/// notification protocol for both sides.
@usableFromInline
internal struct Endpoint: Sendable {
    /// The index this side publishes.
    @usableFromInline let ownIndex: Int
    /// The flags field this side writes to suppress the peer's notifications.
    @usableFromInline let ownFlags: Int
    /// The event field this side writes under EVENT_IDX.
    @usableFromInline let ownEvent: Int
    /// The index the peer publishes.
    @usableFromInline let peerIndex: Int
    /// The flags field the peer writes.
    @usableFromInline let peerFlags: Int
    /// The event field the peer writes under EVENT_IDX.
    @usableFromInline let peerEvent: Int
    @usableFromInline let eventIndex: Bool

    static func driver(_ ring: RingGeometry, eventIndex: Bool) -> Endpoint {
        Endpoint(
            ownIndex: ring.availableIndex,
            ownFlags: ring.availableFlags,
            ownEvent: ring.usedEvent,
            peerIndex: ring.usedIndex,
            peerFlags: ring.usedFlags,
            peerEvent: ring.availableEvent,
            eventIndex: eventIndex
        )
    }

    static func device(_ ring: RingGeometry, eventIndex: Bool) -> Endpoint {
        Endpoint(
            ownIndex: ring.usedIndex,
            ownFlags: ring.usedFlags,
            ownEvent: ring.availableEvent,
            peerIndex: ring.availableIndex,
            peerFlags: ring.availableFlags,
            peerEvent: ring.usedEvent,
            eventIndex: eventIndex
        )
    }

    /// Publishes this side's index with release ordering, so everything written before
    /// (descriptors, ring entries, payloads) is visible to a peer that acquires it.
    @inlinable
    func publish(_ index: UInt16, in base: UnsafeMutableRawPointer) {
        atomic(base, ownIndex).pointee.store(index.littleEndian, ordering: .releasing)
    }

    /// Reads the peer's index with acquire ordering (once; the caller validates the local).
    @inlinable
    func loadPeerIndex(in base: UnsafeMutableRawPointer) -> UInt16 {
        UInt16(littleEndian: atomic(base, peerIndex).pointee.load(ordering: .acquiring))
    }

    /// Decides whether the peer must be notified after this side moved its index from
    /// `old` to `new`, per virtio 1.x §2.7.7 / §2.7.10, with the full fence the spec requires
    /// between publishing the index and reading the peer's suppression state.
    ///
    /// `moves` is how many times the index moved since `old` was current. Free-running 16-bit
    /// indices can't tell 2^16 moves from none, nor judge `vring_need_event` across 2^16 or
    /// more, so after that many the peer is notified regardless (an extra notification is
    /// harmless; a missed one leaves the peer asleep for good). Linux's vhost does the same
    /// (`signalled_used_valid`). Found by the SPIN model, docs/model/notification.pml.
    @inlinable
    func peerNeedsNotification(new: UInt16, old: UInt16, moves: Int, in base: UnsafeMutableRawPointer) -> Bool {
        if moves > Int(UInt16.max) { return true }
        if new == old { return false }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndex {
            let event = UInt16(littleEndian: atomic(base, peerEvent).pointee.load(ordering: .relaxed))
            return needsEvent(event: event, new: new, old: old)
        }
        let flags = UInt16(littleEndian: atomic(base, peerFlags).pointee.load(ordering: .relaxed))
        return flags & suppressNotificationsFlag == 0
    }

    /// Asks the peer to notify this side once its index moves past `lastSeen`.
    @inlinable
    func enableNotifications(lastSeen: UInt16, in base: UnsafeMutableRawPointer) {
        if eventIndex {
            atomic(base, ownEvent).pointee.store(lastSeen.littleEndian, ordering: .relaxed)
        } else {
            atomic(base, ownFlags).pointee.store(0, ordering: .relaxed)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Tells the peer this side is awake and polling. Under EVENT_IDX a stale event index
    /// already suppresses notifications, so only the flag needs writing.
    @inlinable
    func disableNotifications(in base: UnsafeMutableRawPointer) {
        if !eventIndex {
            atomic(base, ownFlags).pointee.store(suppressNotificationsFlag.littleEndian, ordering: .relaxed)
        }
    }

    /// Returns once the peer's index differs from `lastSeen`: spin `spins` times, then publish
    /// that we are about to sleep, re-check, and block on the notifier. No wake-up is lost: the
    /// peer reads our event or flag after its fence, and we re-read its index after ours.
    @inlinable
    func waitForPeer<Notify: Notifier>(
        lastSeen: UInt16,
        spins: Int,
        notifier: Notify,
        in base: UnsafeMutableRawPointer
    ) throws(VirtqueueError) {
        for _ in 0..<spins where loadPeerIndex(in: base) != lastSeen {
            return
        }
        while true {
            enableNotifications(lastSeen: lastSeen, in: base)
            if loadPeerIndex(in: base) != lastSeen { break }
            try notifier.wait()
            if loadPeerIndex(in: base) != lastSeen { break }
        }
        disableNotifications(in: base)
    }

    @inlinable
    func atomic(_ base: UnsafeMutableRawPointer, _ offset: Int) -> UnsafeMutablePointer<Atomic<UInt16>> {
        (base + offset).assumingMemoryBound(to: Atomic<UInt16>.self)
    }
}

/// `vring_need_event` of virtio 1.x: whether moving an index from `old` to `new` crosses `event`.
@inlinable
internal func needsEvent(event: UInt16, new: UInt16, old: UInt16) -> Bool {
    new &- event &- 1 < new &- old
}

/// An identity for each queue, so tokens from one queue are refused by another.
@usableFromInline
internal let queueIdentities = Atomic<UInt32>(0)

@usableFromInline
internal func makeQueueIdentity() -> UInt32 {
    queueIdentities.add(1, ordering: .relaxed).newValue
}
