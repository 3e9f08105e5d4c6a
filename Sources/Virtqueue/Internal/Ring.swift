public import CVirtqueueRelax
public import Synchronization

/// A descriptor as read once from shared memory into a local: `{le64 addr, le32 len, le16 flags, le16 next}`.
@usableFromInline
internal struct Descriptor {
    @usableFromInline static var nextFlag: UInt16 { SplitRingFields.nextFlag }
    @usableFromInline static var writeFlag: UInt16 { SplitRingFields.writeFlag }
    @usableFromInline static var indirectFlag: UInt16 { SplitRingFields.indirectFlag }
    @usableFromInline static var byteCount: Int { SplitRingFields.descriptorByteCount }

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

    /// Reads the descriptor at `pointer` once. The caller has checked that 16 bytes fit.
    @inlinable
    init(loadingFrom pointer: UnsafeMutableRawPointer) {
        let pointer = UnsafeRawPointer(pointer)
        address = UInt64(littleEndian: pointer.loadUnaligned(as: UInt64.self))
        length = UInt32(littleEndian: pointer.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        flags = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        next = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
    }

    @inlinable
    func store(to pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: address.littleEndian, as: UInt64.self)
        pointer.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        pointer.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        pointer.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }
}

/// The flag value both rings use to suppress the peer's notifications
/// (`VIRTQ_AVAIL_F_NO_INTERRUPT` and `VIRTQ_USED_F_NO_NOTIFY` are both 1).
@usableFromInline
internal var suppressNotificationsFlag: UInt16 { SplitRingFields.suppressNotificationsFlag }

/// The split ring engine: one split virtqueue's three areas, resolved once, at set-up, from a
/// placement into this process's addresses. Both sides use this one description of the ring;
/// the offsets come from ``SplitRingFields``.
@usableFromInline
internal struct SplitRing {
    /// Queue size N.
    @usableFromInline let size: Int
    /// N − 1, for masking free-running indices.
    @usableFromInline let mask: UInt16
    @usableFromInline let descriptors: UnsafeMutableRawPointer
    /// The driver area: `avail.flags`, `avail.idx`, `avail.ring[N]`, `used_event`.
    @usableFromInline let available: UnsafeMutableRawPointer
    /// The device area: `used.flags`, `used.idx`, `used.ring[N]`, `avail_event`.
    @usableFromInline let used: UnsafeMutableRawPointer

    /// Resolves `placement`'s areas through `memory` (every mapping, whatever the buffer area):
    /// each area must lie inside one mapping, aligned as virtio requires in this process too.
    ///
    /// - Throws: ``VirtqueueError`` naming the placement value that does not fit.
    init(_ placement: QueuePlacement, memory: AddressMap) throws(VirtqueueError) {
        guard placement.format != .packed else {
            throw VirtqueueError(
                .featureNotSupported,
                "ring format packed is not run by the queues yet: they use the split ring only (docs/wire-format.md §12)"
            )
        }
        let pointers = try placement.resolveAreas(in: memory)
        size = placement.size
        mask = UInt16(truncatingIfNeeded: placement.size - 1)
        descriptors = pointers[0]
        available = pointers[1]
        used = pointers[2]
    }

    /// A split ring in private memory, for a queue that runs the packed ring: the driver's
    /// appends write their descriptors into its table (the packed submit writes the ring), the
    /// device copies a packed list into it for the one chain validator. Nothing shared is in it;
    /// ``deallocatePrivate()`` frees it.
    init(privateForPackedOfSize size: Int) {
        let availableOffset = SplitRingFields.descriptorByteCount * size
        let usedOffset = (availableOffset + SplitRingFields.usedEvent(size: size) + 2 + 3) & ~3
        let byteCount = usedOffset + SplitRingFields.availableEvent(size: size) + 2
        let memory = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 16)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
        self.size = size
        mask = UInt16(truncatingIfNeeded: size - 1)
        descriptors = memory
        available = memory + availableOffset
        used = memory + usedOffset
    }

    /// Frees the memory of a ring made with ``init(privateForPackedOfSize:)``.
    func deallocatePrivate() {
        descriptors.deallocate()
    }

    @inlinable @inline(__always)
    func descriptor(_ index: UInt16) -> UnsafeMutableRawPointer {
        descriptors + Int(index) &* SplitRingFields.descriptorByteCount
    }

    @inlinable @inline(__always)
    func availableEntry(_ index: UInt16) -> UnsafeMutableRawPointer {
        available + SplitRingFields.availableEntry(slot: Int(index & mask))
    }

    @inlinable @inline(__always)
    func usedElement(_ index: UInt16) -> UnsafeMutableRawPointer {
        used + SplitRingFields.usedElement(slot: Int(index & mask))
    }
}

/// The per-side state machine, the same for the driver and the device: one side publishes an
/// index and consumes the peer's.
///
/// The driver publishes `avail.idx`, suppresses the device's notifications with `avail.flags` /
/// `used_event`, and consumes `used.idx`; the device is the mirror image. Everything the two
/// queues have in common lives here, written once: the published index, the last peer index
/// consumed, the shadow of the last peer index read and validated (with its jump check), the moves
/// since the last notification check, notify-if-needed, the wait (spin, arm, re-check, sleep) and
/// the broken state. The fields of the index and suppression come from the ring engine
/// (``SplitRing``). A side of a packed ring (``packed``) publishes and consumes positions with
/// their wrap counters instead (`PackedSide.swift`): `published` and `consumed` hold them in
/// the cursor form of ``PackedRingPosition/cursorValue``, and the calls that differ switch on
/// the format once.
@usableFromInline
internal struct QueueSide {
    @usableFromInline let ownIndex: UnsafeMutablePointer<Atomic<UInt16>>
    @usableFromInline let ownFlags: UnsafeMutablePointer<Atomic<UInt16>>
    @usableFromInline let ownEvent: UnsafeMutablePointer<Atomic<UInt16>>
    @usableFromInline let peerIndex: UnsafeMutablePointer<Atomic<UInt16>>
    @usableFromInline let peerFlags: UnsafeMutablePointer<Atomic<UInt16>>
    @usableFromInline let peerEvent: UnsafeMutablePointer<Atomic<UInt16>>
    @usableFromInline let eventIndex: Bool
    @usableFromInline let isDriver: Bool
    @usableFromInline let size: Int
    /// The packed ring this side runs, or `nil` for the split ring (whose fields are above).
    @usableFromInline let packed: PackedRing?

    /// The index this side publishes next moves to `published + 1`.
    @usableFromInline var published: UInt16
    /// Peer entries consumed so far (the next peer entry to take is at `consumed`).
    @usableFromInline var consumed: UInt16
    /// The last peer index read and validated (at most N past `consumed`); entries before it are
    /// taken without reading the index again, which keeps the peer's cache line from bouncing
    /// between the two CPUs on every entry (vhost's `last_avail_idx` / `avail_idx`).
    @usableFromInline var shadow: UInt16
    @usableFromInline var lastNotifyCheck: UInt16
    /// Publications since `lastNotifyCheck` (the true distance, which 16 bits can't hold).
    @usableFromInline var movesSinceNotifyCheck = 0
    /// The first violation, or the reason the queue stopped; every later call reports it.
    @usableFromInline var broken: VirtqueueError?
    /// Whether the queue is broken (or stopped) or runs the packed ring: the one test the hot
    /// calls make before their split-ring work, which then checks which of the two it is.
    @usableFromInline var diverted: Bool
    /// Whether `published` has moved past the index last stored in shared memory: entries were
    /// staged (``stage()``) and not yet published (``publishStaged()``).
    @usableFromInline var hasStaged = false
    /// Packed ring: the staged `flags` of the first descriptor staged since the last publication,
    /// and where they go (`nil` when nothing is staged, and always for the split ring).
    @usableFromInline var stagedFlags: UInt16 = 0
    @usableFromInline var stagedFlagsAt: UnsafeMutableRawPointer?

    /// One side of `ring`: the driver's when `driver`, else the device's, starting at `cursor`.
    /// With `packed`, the side runs that packed ring, and `ring` is private memory
    /// (``SplitRing/init(privateForPackedOfSize:)``).
    init(driver: Bool, ring: SplitRing, packed: PackedRing? = nil, eventIndex: Bool, cursor: QueueCursor) {
        func atomic(_ pointer: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt16>> {
            pointer.assumingMemoryBound(to: Atomic<UInt16>.self)
        }
        let availableIndex = atomic(ring.available + SplitRingFields.availableIndex)
        let availableFlags = atomic(ring.available + SplitRingFields.availableFlags)
        let usedEvent = atomic(ring.available + SplitRingFields.usedEvent(size: ring.size))
        let usedIndex = atomic(ring.used + SplitRingFields.usedIndex)
        let usedFlags = atomic(ring.used + SplitRingFields.usedFlags)
        let availableEvent = atomic(ring.used + SplitRingFields.availableEvent(size: ring.size))
        if driver {
            (ownIndex, ownFlags, ownEvent) = (availableIndex, availableFlags, usedEvent)
            (peerIndex, peerFlags, peerEvent) = (usedIndex, usedFlags, availableEvent)
            published = cursor.nextAvailable
            consumed = cursor.nextUsed
        } else {
            (ownIndex, ownFlags, ownEvent) = (usedIndex, usedFlags, availableEvent)
            (peerIndex, peerFlags, peerEvent) = (availableIndex, availableFlags, usedEvent)
            published = cursor.nextUsed
            consumed = cursor.nextAvailable
        }
        shadow = consumed
        lastNotifyCheck = published
        self.eventIndex = eventIndex
        self.isDriver = driver
        self.size = ring.size
        self.packed = packed
        diverted = packed != nil
        // A packed side under EVENT_IDX starts as a split one does on its zeroed event index: the
        // peer notifies once when it publishes past this side's position, and the stale event
        // then suppresses notifications until a wait arms it again. The structure's zeroed state
        // is ENABLE, which would have a peer notify on every publication while this side polls
        // without ever sleeping (a busy-polled round trip: a kick each way per message).
        if let packed, eventIndex {
            PackedEventSuppression.descriptor(consumedPosition).store(to: packed.event(writtenByDriver: driver))
        }
    }

    /// Throws the stored error if the queue is broken or stopped.
    ///
    /// `mutating` though it writes nothing: called through the queue's state pointer, a
    /// non-mutating call copies the whole side (160 bytes, with a retain and release of
    /// `broken`) where the compiler cannot see that nothing writes it meanwhile; an in-place
    /// access reads `broken` alone (the packed ring's take paid about 50 instructions a request).
    @inlinable @inline(__always)
    mutating func checkUsable() throws(VirtqueueError) {
        if let broken { throw .broken(by: broken) }
    }

    /// Records `violation` as the reason the queue broke (the first one wins) and returns it.
    @inlinable
    mutating func breakQueue(_ violation: VirtqueueError) -> VirtqueueError {
        if broken == nil { broken = violation }
        diverted = true
        return violation
    }

    /// Reads the peer's index with acquire ordering (once; the caller validates the local).
    @inlinable @inline(__always)
    func loadPeerIndex() -> UInt16 {
        UInt16(littleEndian: peerIndex.pointee.load(ordering: .acquiring))
    }

    /// The position of the next peer entry this side has not consumed (`consumed`), or `nil` if
    /// the peer has published none. Reads the peer's index only when the validated ones have run
    /// out; a jump of more than N breaks the queue. The position is returned so that the caller
    /// need not load `consumed` again after the acquiring load, which it would otherwise have to.
    @inlinable @inline(__always)
    mutating func nextPeerEntry() throws(VirtqueueError) -> UInt16? {
        let consumed = self.consumed
        if shadow != consumed { return consumed }
        let index = loadPeerIndex()
        if index == consumed { return nil }
        guard Int(index &- consumed) <= size else { throw breakQueue(indexJump(index)) }
        shadow = index
        return consumed
    }

    @usableFromInline @inline(never)
    func indexJump(_ index: UInt16) -> VirtqueueError {
        isDriver
            ? .usedIndexJump(index, last: consumed, size: size) : .availableIndexJump(index, last: consumed, size: size)
    }

    /// Publishes this side's next index with release ordering, so everything written before
    /// (descriptors, ring entries, payloads) is visible to a peer that acquires it.
    @inlinable @inline(__always)
    mutating func publish() {
        published &+= 1
        movesSinceNotifyCheck &+= 1
        ownIndex.pointee.store(published.littleEndian, ordering: .releasing)
    }

    /// Counts one more entry written by this side without making it visible: the peer sees it
    /// when ``publishStaged()`` (or a later ``publish()``) stores the index. A run of entries then
    /// costs one store of the index, and one transfer of its cache line to the peer, instead of
    /// one per entry — as QEMU's `virtqueue_fill` / `virtqueue_flush` and DPDK's bursts do.
    @inlinable @inline(__always)
    mutating func stage() {
        published &+= 1
        movesSinceNotifyCheck &+= 1
        hasStaged = true
    }

    /// Publishes the entries staged since the last publication, with release ordering; nothing
    /// when there are none. Every notification decision and every wait does this first, so a
    /// staged entry is never left invisible while this side sleeps or decides the peer needs
    /// no kick.
    @inlinable @inline(__always)
    mutating func publishStaged() {
        guard hasStaged else { return }
        hasStaged = false
        if let at = stagedFlagsAt {
            publishStagedFlags(at)
            return
        }
        ownIndex.pointee.store(published.littleEndian, ordering: .releasing)
    }

    /// Decides whether the peer must be notified of the publications since the last check, per
    /// virtio 1.x §2.7.7 / §2.7.10, with the full fence the spec requires between publishing the
    /// index and reading the peer's suppression state, and starts a new interval.
    ///
    /// Free-running 16-bit indices can't tell 2^16 moves from none, nor judge `vring_need_event`
    /// across 2^16 or more, so after that many the peer is notified regardless (an extra
    /// notification is harmless; a missed one leaves the peer asleep for good). Linux's vhost
    /// does the same (`signalled_used_valid`). Found by the SPIN model, docs/model/notification.pml.
    @inlinable
    mutating func peerNeedsNotification() -> Bool {
        let new = published
        let old = lastNotifyCheck
        let moves = movesSinceNotifyCheck
        lastNotifyCheck = new
        movesSinceNotifyCheck = 0
        if let packed { return packedPeerNeedsNotification(packed, moves: moves) }
        if moves > Int(UInt16.max) { return true }
        if new == old { return false }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndex {
            let event = UInt16(littleEndian: peerEvent.pointee.load(ordering: .relaxed))
            return needsEvent(event: event, new: new, old: old)
        }
        let flags = UInt16(littleEndian: peerFlags.pointee.load(ordering: .relaxed))
        return flags & suppressNotificationsFlag == 0
    }

    /// Notifies the peer if it asked to hear about the publications since the last check. A
    /// notifier that finds the peer gone (``VirtqueueError/Code-swift.struct/peerDied``) breaks
    /// the queue, as a wait that does.
    @inlinable
    mutating func notifyIfNeeded<Notify: Notifier>(_ notifier: Notify) throws(VirtqueueError) -> Bool {
        try checkUsable()
        publishStaged()
        let needed = peerNeedsNotification()
        if needed {
            do throws(VirtqueueError) {
                try notifier.notify()
            } catch {
                if error.code == .peerDied { throw breakQueue(error) }
                throw error
            }
        }
        return needed
    }

    /// Asks the peer to notify this side once its index moves past `consumed`.
    @inlinable
    func enableNotifications() {
        if let packed {
            enablePackedNotifications(packed)
            return
        }
        if eventIndex {
            ownEvent.pointee.store(consumed.littleEndian, ordering: .relaxed)
        } else {
            ownFlags.pointee.store(0, ordering: .relaxed)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Tells the peer this side is awake and polling. Under EVENT_IDX a stale event index
    /// already suppresses notifications, so only the flag needs writing.
    @inlinable
    func disableNotifications() {
        if let packed {
            PackedEventSuppression.disable.store(to: packed.event(writtenByDriver: isDriver))
            return
        }
        if !eventIndex {
            ownFlags.pointee.store(suppressNotificationsFlag.littleEndian, ordering: .relaxed)
        }
    }

    /// Returns once the peer has published an entry this side has not consumed: spin `spins`
    /// times, then publish that we are about to sleep, re-check, and block on the notifier. No
    /// wake-up is lost: the peer reads our event or flag after its fence, and we re-read its
    /// index after ours. A peer that died ends the wait with
    /// ``VirtqueueError/Code-swift.struct/peerDied``, which breaks the queue.
    @inlinable
    mutating func waitForPeer<Notify: Notifier>(spins: Int, notifier: Notify) throws(VirtqueueError) {
        try checkUsable()
        publishStaged()
        // The spin: the index's address and the last consumed entry in registers, a load, a
        // compare, the CPU's spin-wait hint and a count per iteration. The hint spaces the loads
        // out (as the C baselines' spins are), so the poll takes the index's cache line from the
        // writer less often and lasts long enough to see the next batch before it sleeps.
        if let packed {
            if spinForPackedEntry(packed, spins: spins) { return }
        } else {
            let index = peerIndex
            let last = consumed
            var remaining = spins
            while remaining > 0 {
                if UInt16(littleEndian: index.pointee.load(ordering: .acquiring)) != last { return }
                vq_cpu_relax()
                remaining &-= 1
            }
        }
        do throws(VirtqueueError) {
            while true {
                enableNotifications()
                if peerEntryVisible() { break }
                try notifier.wait()
                if peerEntryVisible() { break }
            }
        } catch {
            if error.code == .peerDied { throw breakQueue(error) }
            throw error
        }
        disableNotifications()
    }
}

extension QueueSide {
    /// Whether the peer has written something at this side's next entry: `avail.idx` or
    /// `used.idx` moved (split), or the descriptor at this side's position changed as
    /// ``packedEntryVisible(_:)`` says (packed). What it is, the taking call validates.
    @inlinable
    func peerEntryVisible() -> Bool {
        if let packed { return packedEntryVisible(packed) }
        return loadPeerIndex() != consumed
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

/// What a queue resolves from its memory and placement at set-up, shared by both sides: the ring,
/// through every mapping (a table freed once the ring is resolved), and the translation table for
/// buffers, which the queue owns from then on and frees with ``deallocate()``.
@usableFromInline
internal struct QueueSetup {
    /// The split ring, or for a packed placement a private one
    /// (``SplitRing/init(privateForPackedOfSize:)``).
    let ring: SplitRing
    /// The packed ring, or `nil` for a split placement.
    let packed: PackedRing?
    /// The mappings clipped to the placement's buffer area: for buffers and indirect tables.
    let buffers: AddressMap

    init<Memory: GuestMemory & ~Copyable>(
        memory: borrowing Memory,
        placement: QueuePlacement,
        features: Features
    ) throws(VirtqueueError) {
        try features.validateForRing()
        guard (placement.format == .packed) == features.contains(.ringPacked) else {
            throw VirtqueueError(
                .invalidPlacement,
                "ring format \(placement.format) disagrees with features \(features): RING_PACKED (bit 34) "
                    + (placement.format == .packed ? "is not set" : "is set")
            )
        }
        let (packed, ring, buffers) = try memory.withMappings {
            (mappings) throws(VirtqueueError) -> (PackedRing?, SplitRing?, AddressMap) in
            let all = try AddressMap(mappings)
            defer { all.deallocate() }
            if placement.format == .packed {
                let packed = try PackedRing(placement, memory: all)
                return (packed, nil, try AddressMap(mappings, clippedTo: placement.bufferArea))
            }
            let ring = try SplitRing(placement, memory: all)
            return (nil, ring, try AddressMap(mappings, clippedTo: placement.bufferArea))
        }
        self.packed = packed
        self.ring = ring ?? SplitRing(privateForPackedOfSize: placement.size)
        self.buffers = buffers
    }

    /// Frees the buffers' table. (A packed queue's private ring belongs to the queue's state,
    /// which frees it.)
    func deallocate() {
        buffers.deallocate()
    }
}
