/// A validated chain: its segments sit in the device's private store, linked from `first`.
///
/// While the chain is parsed, its segments are taken from the head of the store's free list
/// without unlinking them: `cursor` is the next free slot. The slots a chain takes are therefore
/// already linked in order by the free list itself, nothing is written to the store but the
/// segments' values, and a chain that fails validation gives nothing back: it only has to not
/// commit (``DeviceState/commit(_:)``).
@usableFromInline
internal struct ParsedChain {
    @usableFromInline var first: UInt32
    @usableFromInline var last: UInt32 = noBuffer
    /// The free slot the next segment will take.
    @usableFromInline var cursor: UInt32
    @usableFromInline var count = 0
    @usableFromInline var readableByteCount = 0
    @usableFromInline var writableByteCount = 0
    @usableFromInline var sawWritable = false

    @inlinable init(cursor: UInt32) {
        self.first = cursor
        self.cursor = cursor
    }
}

extension DeviceState {
    /// Walks the descriptor chain that starts at `head` — the one parser of descriptor memory
    /// in this library — reading each descriptor once and checking every rule of
    /// `docs/trust-model.md` before the segment is used:
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
    /// A violation breaks the queue where it is found and is thrown; the store is unchanged (the
    /// partial chain was never committed).
    ///
    /// The loop here takes the common case — direct descriptors inside the hot window — and keeps
    /// the chain in registers. The first descriptor that is anything else (indirect, outside the
    /// hot window, or a violation there) hands the chain, and that descriptor as already read,
    /// to ``parseChainRest(_:at:visited:head:chain:indirectAllowed:)``, out of line, which
    /// finishes the chain with every rule: each descriptor is still read once.
    @inlinable @inline(__always)
    mutating func parseChain(head: UInt16, indirectAllowed: Bool) throws(VirtqueueError) -> ParsedChain {
        var chain = ParsedChain(cursor: freeSegmentHead)
        var index = head
        var visited = 1
        while true {
            let descriptor = Descriptor(loadingFrom: ring.descriptor(index))
            let writable = descriptor.flags & Descriptor.writeFlag != 0
            guard descriptor.flags & Descriptor.indirectFlag == 0,
                let host = buffers.hotHost(descriptor.address, length: descriptor.length)
            else {
                return try parseChainRest(
                    descriptor,
                    at: index,
                    visited: visited,
                    head: head,
                    chain: chain,
                    indirectAllowed: indirectAllowed
                )
            }
            try checkOrder(writable: writable, at: index, in: &chain)
            try store(host: host, length: descriptor.length, writable: writable, to: &chain)
            guard let next = try next(after: descriptor, at: index, visited: &visited, head: head) else {
                return chain
            }
            index = next
        }
    }

    /// Finishes parsing a chain from `descriptor`, already read from slot `index` as the
    /// `visited`-th descriptor, with every rule of ``parseChain(head:indirectAllowed:)``.
    @usableFromInline @inline(never)
    mutating func parseChainRest(
        _ descriptor: Descriptor,
        at index: UInt16,
        visited: Int,
        head: UInt16,
        chain: ParsedChain,
        indirectAllowed: Bool
    ) throws(VirtqueueError) -> ParsedChain {
        var chain = chain
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
                return chain
            }
            try append(descriptor, at: index, to: &chain)
            guard let next = try next(after: descriptor, at: index, visited: &visited, head: head) else {
                return chain
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

    /// Takes the segments of a validated chain out of the free list.
    @inlinable @inline(__always)
    mutating func commit(_ chain: ParsedChain) {
        freeSegmentHead = chain.cursor
        freeSegmentCount &-= chain.count
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
            let inner = Descriptor(loadingFrom: table + entry * Descriptor.byteCount)
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

    /// Device-readable segments come before device-writable ones.
    @inlinable @inline(__always)
    mutating func checkOrder(writable: Bool, at index: UInt16, in chain: inout ParsedChain) throws(VirtqueueError) {
        if writable {
            chain.sawWritable = true
        } else if chain.sawWritable {
            throw side.breakQueue(.writableBeforeReadable(descriptor: index))
        }
    }

    @inlinable @inline(__always)
    mutating func store(
        host: UnsafeMutableRawPointer,
        length: UInt32,
        writable: Bool,
        to chain: inout ParsedChain
    ) throws(VirtqueueError) {
        guard chain.count < freeSegmentCount else { throw .segmentStoreExhausted(capacity: segmentCapacity) }
        let slot = chain.cursor
        segments[Int(slot)].host = host
        segments[Int(slot)].length = length
        segments[Int(slot)].writable = writable
        chain.cursor = segments[Int(slot)].next
        chain.last = slot
        chain.count &+= 1
        if writable {
            chain.writableByteCount &+= Int(length)
        } else {
            chain.readableByteCount &+= Int(length)
        }
    }
}
