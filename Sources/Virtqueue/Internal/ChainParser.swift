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
    /// - `addr + len` lies inside the data area, without overflow;
    /// - device-readable segments come before device-writable ones;
    /// - an indirect descriptor has no NEXT, needs VIRTIO_F_INDIRECT_DESC, points at a table
    ///   inside the data area whose length is a non-zero multiple of 16, whose descriptors obey
    ///   the same rules, never nest and never chain more than the table holds;
    /// - the whole chain has at most N segments.
    ///
    /// On a violation the error is thrown and the store is unchanged (the partial chain was never
    /// committed); the caller breaks the queue.
    @inlinable @inline(__always)
    mutating func parseChain(
        head: UInt16,
        in base: UnsafeMutableRawPointer,
        indirectAllowed: Bool
    ) throws(VirtqueueError) -> ParsedChain {
        var chain = ParsedChain(cursor: freeSegmentHead)
        var index = head
        var visited = 0
        while true {
            visited &+= 1
            guard visited <= ring.size else { throw .descriptorLoop(head: head, size: ring.size) }
            let descriptor = Descriptor(
                loadingFrom: base,
                at: ring.descriptorTable &+ Int(index) &* Descriptor.byteCount
            )
            if descriptor.flags & Descriptor.indirectFlag != 0 {
                try appendIndirect(
                    descriptor,
                    at: index,
                    to: &chain,
                    in: base,
                    allowed: indirectAllowed
                )
                break
            }
            try append(descriptor, at: index, to: &chain)
            guard descriptor.flags & Descriptor.nextFlag != 0 else { break }
            guard Int(descriptor.next) < ring.size else {
                throw .nextOutOfRange(descriptor: index, next: descriptor.next, size: ring.size)
            }
            index = descriptor.next
        }
        return chain
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
        to chain: inout ParsedChain,
        in base: UnsafeMutableRawPointer,
        allowed: Bool
    ) throws(VirtqueueError) {
        guard allowed else {
            throw VirtqueueError(
                .indirectNotNegotiated,
                "descriptor \(index) is INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated"
            )
        }
        guard descriptor.flags & Descriptor.nextFlag == 0 else {
            throw VirtqueueError(.indirectWithNext, "descriptor \(index) has both INDIRECT and NEXT set")
        }
        guard descriptor.length > 0, descriptor.length % UInt32(Descriptor.byteCount) == 0 else {
            throw VirtqueueError(
                .indirectLengthInvalid,
                "indirect table of descriptor \(index) is \(descriptor.length) bytes, not a non-zero multiple of 16"
            )
        }
        guard ring.dataAreaContains(address: descriptor.address, length: UInt64(descriptor.length)) else {
            throw VirtqueueError(
                .indirectOutOfRange,
                "indirect table at \(descriptor.address) of \(descriptor.length) bytes lies outside the data area \(ring.dataStart)..<\(ring.dataEnd)"
            )
        }
        let tableCount = Int(descriptor.length) / Descriptor.byteCount
        guard chain.count + tableCount <= ring.size else {
            throw VirtqueueError(
                .peerChainTooLong,
                "indirect table of \(tableCount) descriptors makes the chain longer than the queue size \(ring.size)"
            )
        }
        let table = Int(descriptor.address)
        var entry = 0
        var visited = 0
        while true {
            visited += 1
            guard visited <= tableCount else {
                throw VirtqueueError(
                    .descriptorLoop,
                    "the indirect chain of descriptor \(index) visits more than its \(tableCount) entries (it loops)"
                )
            }
            let inner = Descriptor(loadingFrom: base, at: table + entry * Descriptor.byteCount)
            guard inner.flags & Descriptor.indirectFlag == 0 else {
                throw VirtqueueError(
                    .nestedIndirect,
                    "entry \(entry) of the indirect table of descriptor \(index) is itself INDIRECT"
                )
            }
            try append(inner, at: UInt16(truncatingIfNeeded: entry), to: &chain)
            guard inner.flags & Descriptor.nextFlag != 0 else { return }
            guard Int(inner.next) < tableCount else {
                throw VirtqueueError(
                    .nextOutOfRange,
                    "indirect entry \(entry) has next \(inner.next), not below the table's \(tableCount) entries"
                )
            }
            entry = Int(inner.next)
        }
    }

    /// Checks one buffer descriptor and copies it into the private store.
    @inlinable @inline(__always)
    mutating func append(
        _ descriptor: Descriptor,
        at index: UInt16,
        to chain: inout ParsedChain
    ) throws(VirtqueueError) {
        guard ring.dataAreaContains(address: descriptor.address, length: UInt64(descriptor.length)) else {
            throw .bufferOutOfRange(
                descriptor: index,
                address: descriptor.address,
                length: descriptor.length,
                dataStart: ring.dataStart,
                dataEnd: ring.dataEnd
            )
        }
        let writable = descriptor.flags & Descriptor.writeFlag != 0
        if writable {
            chain.sawWritable = true
        } else if chain.sawWritable {
            throw .writableBeforeReadable(descriptor: index)
        }
        guard chain.count < ring.size else { throw .peerChainTooLong(size: ring.size) }
        guard chain.count < freeSegmentCount else { throw .segmentStoreExhausted(capacity: segmentCapacity) }
        let slot = chain.cursor
        segments[Int(slot)].offset = descriptor.address
        segments[Int(slot)].length = descriptor.length
        segments[Int(slot)].writable = writable
        chain.cursor = segments[Int(slot)].next
        chain.last = slot
        chain.count &+= 1
        if writable {
            chain.writableByteCount &+= Int(descriptor.length)
        } else {
            chain.readableByteCount &+= Int(descriptor.length)
        }
    }
}
