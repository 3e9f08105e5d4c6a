/// A chain being validated: its first segments go to the head's own slots, the rest to the
/// overflow store.
///
/// Overflow segments are taken from the head of the store's free list without unlinking them:
/// `overflowCursor` is the next free slot. The slots a chain takes are therefore already linked
/// in order by the free list itself, nothing is written to the store but the segments' values,
/// and a chain that fails validation gives nothing back: it only has to not commit
/// (``DeviceState/commit(_:head:)``).
@usableFromInline
internal struct ParsedChain {
    /// The chain's head: its segments go to this head's own slots first.
    @usableFromInline let head: UInt16
    @usableFromInline var count = 0
    /// Segments before the first device-writable one.
    @usableFromInline var readableSegmentCount = 0
    @usableFromInline var readableByteCount = 0
    @usableFromInline var writableByteCount = 0
    /// The overflow segments, once the head's slots are full (``noBuffer`` before).
    @usableFromInline var overflowFirst = noBuffer
    @usableFromInline var overflowLast = noBuffer
    /// The free overflow slot the next overflow segment will take.
    @usableFromInline var overflowCursor = noBuffer

    @inlinable init(head: UInt16) {
        self.head = head
    }

    /// A chain the hot path has parsed so far (no overflow segments yet), from its counts: the
    /// out-of-line paths take the counts as scalars, so that the hot path's chain never has its
    /// address taken and stays in registers.
    @inlinable init(head: UInt16, counts: ChainCounts) {
        self.head = head
        self.count = counts.count
        self.readableSegmentCount = counts.readableSegments
        self.readableByteCount = counts.readableBytes
        self.writableByteCount = counts.writableBytes
    }
}

/// The counts of a chain the hot path has parsed so far, packed to be passed in registers.
@usableFromInline
internal struct ChainCounts {
    @usableFromInline var count: Int
    @usableFromInline var readableSegments: Int
    @usableFromInline var readableBytes: Int
    @usableFromInline var writableBytes: Int

    @inlinable init(_ chain: ParsedChain) {
        count = chain.count
        readableSegments = chain.readableSegmentCount
        readableBytes = chain.readableByteCount
        writableBytes = chain.writableByteCount
    }
}

extension DeviceState {
    /// Walks the descriptor chain that starts at `head` — the one parser of descriptor memory
    /// in this library — reading each descriptor once and checking every rule of
    /// `docs/trust-model.md` before the segment is used, and records it as held at `head`
    /// (``commit(_:head:)``):
    ///
    /// - a chain visits at most N descriptors (more means a loop) and `next` stays below N;
    /// - `addr + len` lies inside memory and the buffer area, without overflow; a buffer that
    ///   spans two adjacent mappings becomes two segments, one in a gap is a violation;
    /// - device-readable segments come before device-writable ones;
    /// - an indirect descriptor has no NEXT, needs VIRTIO_F_INDIRECT_DESC, points at a table
    ///   inside one mapping of the buffer area whose length is a non-zero multiple of 16, whose
    ///   descriptors obey the same rules, never nest, and which with the direct descriptors
    ///   before it makes a chain of at most N descriptors.
    ///
    /// A violation breaks the queue where it is found and is thrown; nothing held is changed
    /// (the partial chain was never committed). A chain of more segments than are left of the
    /// capacity is refused with ``VirtqueueError/Code-swift.struct/segmentStoreExhausted``
    /// (the queue stays usable): once, from its count, when it is complete — or, past the head's
    /// own slots, at the segment that does not fit.
    ///
    /// The common case — direct descriptors inside the hot window, at most ``hotSegmentLimit``
    /// of them — is parsed here, with the chain in registers and the first descriptor peeled
    /// out of the loop. The first descriptor that is anything else (indirect, outside the hot
    /// window, or a violation there) hands the chain, and that descriptor as already read, to
    /// ``parseChainRest(_:at:visited:head:counts:)``, out of line, which finishes
    /// and commits the chain with every rule: each descriptor is still read once. The hot path
    /// counts no descriptors for the loop rule: it stops at ``hotSegmentLimit`` (at most N),
    /// one segment per descriptor, and ``parseChainFrom(_:visited:head:counts:)``
    /// counts on.
    @inlinable @inline(__always)
    mutating func takeChain(head: UInt16) throws(VirtqueueError) {
        try takeChain(head: head, first: head)
    }

    /// ``takeChain(head:)`` for a chain whose first descriptor is at slot `first` and which is
    /// held at `head`: the packed ring's, whose descriptors the device has copied into its
    /// private table at their ring positions (`first` is the list's position, `head` its
    /// buffer ID).
    @inlinable @inline(__always)
    mutating func takeChain(head: UInt16, first: UInt16) throws(VirtqueueError) {
        var chain = ParsedChain(head: head)
        guard let next = try hotStep(first, head: head, chain: &chain) else { return }
        try takeChainRest(next, head: head, counts: ChainCounts(chain))
    }

    /// Goes on with a chain of more than one descriptor, from slot `index`: the same hot path, in
    /// a loop, out of line.
    @usableFromInline @inline(never)
    mutating func takeChainRest(_ index: UInt16, head: UInt16, counts: ChainCounts) throws(VirtqueueError) {
        var chain = ParsedChain(head: head, counts: counts)
        var index = index
        while let next = try hotStep(index, head: head, chain: &chain) {
            index = next
        }
    }

    /// One descriptor of ``takeChain(head:)``'s hot path, at slot `index`:
    /// returns the next slot, or `nil` once the chain is committed (here, or out of line).
    @inlinable @inline(__always)
    mutating func hotStep(
        _ index: UInt16,
        head: UInt16,
        chain: inout ParsedChain
    ) throws(VirtqueueError) -> UInt16? {
        let descriptor = Descriptor(loadingFrom: ring.descriptor(index))
        let writable = descriptor.flags & Descriptor.writeFlag != 0
        guard descriptor.flags & Descriptor.indirectFlag == 0,
            let host = buffers.hotHost(descriptor.address, length: descriptor.length)
        else {
            try parseChainRest(
                descriptor,
                at: index,
                visited: chain.count &+ 1,
                head: head,
                counts: ChainCounts(chain)
            )
            return nil
        }
        try checkOrder(writable: writable, at: index, in: &chain)
        let slot = slots(head) + chain.count
        slot.pointee.host = host
        slot.pointee.length = descriptor.length
        chain.add(descriptor.length, writable: writable)
        guard descriptor.flags & Descriptor.nextFlag != 0 else {
            try commit(chain, head: head)
            return nil
        }
        let size = ring.size
        guard Int(descriptor.next) < size else {
            throw side.breakQueue(.nextOutOfRange(descriptor: index, next: descriptor.next, size: size))
        }
        guard chain.count < hotSegmentLimit else {
            try parseChainFrom(
                descriptor.next,
                visited: chain.count &+ 1,
                head: head,
                counts: ChainCounts(chain)
            )
            return nil
        }
        return descriptor.next
    }

    /// Goes on with a chain the hot path filled up to its limit: slot `index` (below N) is the
    /// `visited`-th descriptor, not yet read.
    @usableFromInline @inline(never)
    mutating func parseChainFrom(
        _ index: UInt16,
        visited: Int,
        head: UInt16,
        counts: ChainCounts
    ) throws(VirtqueueError) {
        guard visited <= ring.size else { throw side.breakQueue(.descriptorLoop(head: head, size: ring.size)) }
        try parseChainRest(
            Descriptor(loadingFrom: ring.descriptor(index)),
            at: index,
            visited: visited,
            head: head,
            counts: counts
        )
    }

    /// Finishes parsing a chain from `descriptor`, already read from slot `index` as the
    /// `visited`-th descriptor, with every rule of ``takeChain(head:)``, and
    /// commits it.
    @usableFromInline @inline(never)
    mutating func parseChainRest(
        _ descriptor: Descriptor,
        at index: UInt16,
        visited: Int,
        head: UInt16,
        counts: ChainCounts
    ) throws(VirtqueueError) {
        var chain = ParsedChain(head: head, counts: counts)
        var descriptor = descriptor
        var index = index
        var visited = visited
        while true {
            if descriptor.flags & Descriptor.indirectFlag != 0 {
                try appendIndirect(
                    descriptor,
                    at: index,
                    directCount: visited &- 1,
                    to: &chain,
                    allowed: indirectAllowed
                )
                try commit(chain, head: head)
                return
            }
            try append(descriptor, at: index, to: &chain)
            guard let next = try next(after: descriptor, at: index, visited: &visited, head: head) else {
                try commit(chain, head: head)
                return
            }
            index = next
            descriptor = Descriptor(loadingFrom: ring.descriptor(index))
        }
    }

    /// The slot of the descriptor after `descriptor` (at slot `index`), or `nil` at the chain's
    /// end; counts it in `visited`. A `next` not below N, or more than N descriptors (a loop),
    /// breaks the queue.
    @inlinable @inline(__always)
    mutating func next(after descriptor: Descriptor, at index: UInt16, visited: inout Int, head: UInt16)
        throws(VirtqueueError) -> UInt16?
    {
        guard descriptor.flags & Descriptor.nextFlag != 0 else { return nil }
        let size = ring.size
        guard Int(descriptor.next) < size else {
            throw side.breakQueue(.nextOutOfRange(descriptor: index, next: descriptor.next, size: size))
        }
        visited &+= 1
        guard visited <= size else { throw side.breakQueue(.descriptorLoop(head: head, size: size)) }
        return descriptor.next
    }

    /// Records a validated chain at `head` (which the device did not hold) and takes its
    /// overflow segments out of the free list, if the capacity has room for its segments
    /// (``VirtqueueError/Code-swift.struct/segmentStoreExhausted`` if not: nothing changes).
    @inlinable @inline(__always)
    mutating func commit(_ chain: ParsedChain, head: UInt16) throws(VirtqueueError) {
        guard chain.count <= segmentRoom else { throw .segmentStoreExhausted(capacity: segmentCapacity) }
        let record = self.record(head)
        record.pointee.readableByteCount = chain.readableByteCount
        record.pointee.writableByteCount = chain.writableByteCount
        record.pointee.segmentCount = UInt32(truncatingIfNeeded: chain.count)
        record.pointee.readableSegmentCount = UInt32(truncatingIfNeeded: chain.readableSegmentCount)
        if chain.count > Self.inlineSegmentCount {
            record.pointee.overflowFirst = chain.overflowFirst
            record.pointee.overflowLast = chain.overflowLast
            freeSegmentHead = chain.overflowCursor
        }
        segmentRoom &-= chain.count
    }

    @inlinable
    mutating func appendIndirect(
        _ descriptor: Descriptor,
        at index: UInt16,
        directCount: Int,
        to chain: inout ParsedChain,
        allowed: Bool
    ) throws(VirtqueueError) {
        guard allowed else {
            throw side.breakQueue(
                VirtqueueError(
                    .indirectNotNegotiated,
                    "descriptor \(index) is INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated"
                )
            )
        }
        guard descriptor.flags & Descriptor.nextFlag == 0 else {
            throw side.breakQueue(
                VirtqueueError(.indirectWithNext, "descriptor \(index) has both INDIRECT and NEXT set")
            )
        }
        guard descriptor.length > 0, descriptor.length % UInt32(Descriptor.byteCount) == 0 else {
            throw side.breakQueue(
                VirtqueueError(
                    .indirectLengthInvalid,
                    "indirect table of descriptor \(index) is \(descriptor.length) bytes, not a non-zero multiple of 16"
                )
            )
        }
        let table = try indirectTable(descriptor, at: index)
        let tableCount = Int(descriptor.length) / Descriptor.byteCount
        guard directCount + tableCount <= ring.size else {
            throw side.breakQueue(
                VirtqueueError(
                    .peerChainTooLong,
                    "indirect table of \(tableCount) descriptors after \(directCount) direct ones makes the chain longer than the queue size \(ring.size)"
                )
            )
        }
        // A packed ring's table is in the packed format (§2.8.7): used first to last, no `next`.
        let packedTable = side.packed != nil
        var entry = 0
        var visited = 0
        while true {
            visited += 1
            guard visited <= tableCount else {
                throw side.breakQueue(
                    VirtqueueError(
                        .descriptorLoop,
                        "the indirect chain of descriptor \(index) visits more than its \(tableCount) entries (it loops)"
                    )
                )
            }
            let inner =
                packedTable
                ? Descriptor(packedTableEntry: table + entry * Descriptor.byteCount, at: entry, of: tableCount)
                : Descriptor(loadingFrom: table + entry * Descriptor.byteCount)
            guard inner.flags & Descriptor.indirectFlag == 0 else {
                throw side.breakQueue(
                    VirtqueueError(
                        .nestedIndirect,
                        "entry \(entry) of the indirect table of descriptor \(index) is itself INDIRECT"
                    )
                )
            }
            try append(inner, at: UInt16(truncatingIfNeeded: entry), to: &chain)
            guard inner.flags & Descriptor.nextFlag != 0 else { return }
            guard Int(inner.next) < tableCount else {
                throw side.breakQueue(
                    VirtqueueError(
                        .nextOutOfRange,
                        "indirect entry \(entry) has next \(inner.next), not below the table's \(tableCount) entries"
                    )
                )
            }
            entry = Int(inner.next)
        }
    }

    /// The indirect table's bytes: inside one mapping of the buffer area.
    @inlinable
    mutating func indirectTable(_ descriptor: Descriptor, at index: UInt16) throws(VirtqueueError)
        -> UnsafeMutableRawPointer
    {
        if let host = buffers.hotHost(descriptor.address, length: descriptor.length) { return host }
        return try indirectTableOutsideHotWindow(descriptor, at: index)
    }

    @usableFromInline @inline(never)
    mutating func indirectTableOutsideHotWindow(_ descriptor: Descriptor, at index: UInt16) throws(VirtqueueError)
        -> UnsafeMutableRawPointer
    {
        let map = buffers
        if let host = map.contiguousHost(descriptor.address, length: UInt64(descriptor.length)) { return host }
        let why = map.problem(address: descriptor.address, length: UInt64(descriptor.length)) ?? "it spans two mappings"
        throw side.breakQueue(
            VirtqueueError(
                .indirectOutOfRange,
                "indirect table of descriptor \(index) at bus address \(hex(descriptor.address)) of \(descriptor.length) bytes: \(why)"
            )
        )
    }

    /// Checks one buffer descriptor and copies it into the private store, translated.
    @inlinable @inline(__always)
    mutating func append(_ descriptor: Descriptor, at index: UInt16, to chain: inout ParsedChain)
        throws(VirtqueueError)
    {
        let writable = descriptor.flags & Descriptor.writeFlag != 0
        guard let host = buffers.hotHost(descriptor.address, length: descriptor.length) else {
            try appendOutsideHotWindow(descriptor, at: index, writable: writable, to: &chain)
            return
        }
        try checkOrder(writable: writable, at: index, in: &chain)
        try store(host: host, length: descriptor.length, writable: writable, to: &chain)
    }

    /// A buffer outside the hot window: in another mapping, spanning adjacent mappings (one
    /// segment per mapping), or a violation.
    @usableFromInline @inline(never)
    mutating func appendOutsideHotWindow(
        _ descriptor: Descriptor,
        at index: UInt16,
        writable: Bool,
        to chain: inout ParsedChain
    ) throws(VirtqueueError) {
        let map = buffers
        if let problem = map.problem(address: descriptor.address, length: UInt64(descriptor.length)) {
            throw side.breakQueue(
                .bufferOutOfRange(descriptor: index, address: descriptor.address, length: descriptor.length, problem)
            )
        }
        try checkOrder(writable: writable, at: index, in: &chain)
        try map.segments(address: descriptor.address, length: UInt64(descriptor.length)) {
            (host, length) throws(VirtqueueError) in
            try store(host: host, length: length, writable: writable, to: &chain)
        }
    }

    /// Device-readable segments come before device-writable ones: a readable one only while
    /// every segment so far is readable.
    @inlinable @inline(__always)
    mutating func checkOrder(writable: Bool, at index: UInt16, in chain: inout ParsedChain) throws(VirtqueueError) {
        guard writable || chain.readableSegmentCount == chain.count else {
            throw side.breakQueue(.writableBeforeReadable(descriptor: index))
        }
    }

    /// Stores one segment: in the head's slots, or past them in the overflow store while the
    /// capacity allows (the hot loop stores its segments itself).
    @inlinable @inline(__always)
    mutating func store(
        host: UnsafeMutableRawPointer,
        length: UInt32,
        writable: Bool,
        to chain: inout ParsedChain
    ) throws(VirtqueueError) {
        if chain.count < Self.inlineSegmentCount {
            let slot = slots(chain.head) + chain.count
            slot.pointee.host = host
            slot.pointee.length = length
        } else {
            if chain.count == Self.inlineSegmentCount {
                chain.overflowFirst = freeSegmentHead
                chain.overflowCursor = freeSegmentHead
            }
            let slot = chain.overflowCursor
            guard chain.count < segmentRoom, slot != noBuffer else {
                throw .segmentStoreExhausted(capacity: segmentCapacity)
            }
            segments[Int(slot)].host = host
            segments[Int(slot)].length = length
            chain.overflowCursor = segments[Int(slot)].next
            chain.overflowLast = slot
        }
        chain.add(length, writable: writable)
    }
}

extension ParsedChain {
    /// Counts a segment just stored.
    @inlinable @inline(__always)
    mutating func add(_ length: UInt32, writable: Bool) {
        count &+= 1
        if writable {
            writableByteCount &+= Int(length)
        } else {
            readableByteCount &+= Int(length)
            readableSegmentCount &+= 1
        }
    }
}
