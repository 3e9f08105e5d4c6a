/// The driver's private record of one pool buffer. Lives in process-private memory only.
@usableFromInline
internal struct BufferRecord {
    @usableFromInline static let writableFlag: UInt8 = 2

    /// Next buffer in the free list or in the chain. A chain's buffers stay linked in order from
    /// its first to its last, so the whole chain goes back to the free list in one step.
    /// Nothing reads the link after a chain's last buffer: walks are bounded by the chain's count.
    @usableFromInline var next: UInt32
    /// Bytes of the segment this buffer carries.
    @usableFromInline var length: UInt32
    @usableFromInline var flags: UInt8
    /// The buffer's bytes in this process, translated once when the pool was set up.
    @usableFromInline var host: UnsafeMutableRawPointer?
    /// The buffer's bus address, computed once when the pool was set up (a descriptor's `addr`).
    @usableFromInline var address: UInt64

    @inlinable
    init(next: UInt32, host: UnsafeMutableRawPointer?, address: UInt64) {
        self.next = next
        self.length = 0
        self.flags = 0
        self.host = host
        self.address = address
    }
}

/// The driver's private record of a chain, indexed by its head descriptor: written while the chain
/// is built (the head is taken with its first segment), kept while it is in flight. The `Chain`
/// token carries only the head, so the chain's state lives here, in one place.
@usableFromInline
internal struct HeadRecord {
    @usableFromInline var firstBuffer: UInt32 = noBuffer
    @usableFromInline var lastBuffer: UInt32 = noBuffer
    @usableFromInline var segmentCount: UInt32 = 0
    /// The pool buffer holding the indirect table, or ``noBuffer`` for a direct chain.
    @usableFromInline var indirectTable: UInt32 = noBuffer
    @usableFromInline var writableByteCount: UInt64 = 0
    /// A direct chain's last descriptor (its descriptors are linked head to last in
    /// `descriptorNext`); the head of an indirect one.
    @usableFromInline var lastDescriptor: UInt16 = 0
    /// Whether a device-writable segment has been appended (none readable may follow).
    @usableFromInline var hasWritable = false
    @usableFromInline var inFlight = false

    @inlinable init() {}

    /// The record of a chain whose first segment is `buffer` on descriptor `head`.
    @inlinable @inline(__always)
    init(head: UInt16, buffer: UInt32, writableByteCount: UInt64, hasWritable: Bool, inFlight: Bool = false) {
        firstBuffer = buffer
        lastBuffer = buffer
        segmentCount = 1
        self.writableByteCount = writableByteCount
        lastDescriptor = head
        self.hasWritable = hasWritable
        self.inFlight = inFlight
    }
}

/// Marks the end of a buffer list.
@usableFromInline
internal let noBuffer = UInt32.max

/// Everything the driver keeps in private memory: its side of the ring, free descriptors, chains
/// in flight, the buffer pool. Nothing here is ever read back from shared memory, so a hostile
/// device cannot corrupt the driver's bookkeeping.
@usableFromInline
internal struct DriverState: TokenHoldingState {
    /// The ring, resolved at set-up.
    @usableFromInline let ring: SplitRing
    /// The driver's side of the ring: `avail.idx` published, `used.idx` consumed.
    @usableFromInline var side: QueueSide

    // Descriptors: a free list threaded through `descriptorNext`. The descriptors of a direct
    // chain being built or in flight stay linked there in chain order, head to last, so the
    // chain goes back to the free list in one step.
    @usableFromInline let descriptorNext: UnsafeMutablePointer<UInt16>
    @usableFromInline var freeDescriptorHead: UInt16 = 0
    @usableFromInline var freeDescriptorCount: Int

    // Chains in flight, by head descriptor.
    @usableFromInline let heads: UnsafeMutablePointer<HeadRecord>
    /// Chains submitted and not yet taken back: those published and not consumed, less those taken
    /// back by `takeAbandoned` (no counter to keep on the hot path). At most N, so the 16-bit
    /// difference of the two indices is exact.
    @usableFromInline var inFlightCount: Int {
        if side.packed != nil { return packedInFlightCount &- abandonedCount }
        return Int(side.published &- side.consumed) &- abandonedCount
    }
    /// Packed ring: chains submitted and not taken back by `takeUsed` (positions advance by
    /// descriptors, so they do not count chains).
    @usableFromInline var packedInFlightCount = 0
    /// Chains taken back by `takeAbandoned` after the queue broke (their used entries never came).
    @usableFromInline var abandonedCount = 0
    @usableFromInline var abandonCursor = 0

    // The buffer pool: fixed-size slots of the pool's bus range, with a free list. A slot that
    // does not lie inside one mapping is left out of the free list.
    @usableFromInline let buffers: UnsafeMutablePointer<BufferRecord>
    @usableFromInline let bufferCount: Int
    @usableFromInline var freeBufferHead: UInt32
    @usableFromInline var freeBufferCount: Int

    /// Whether the queue has gone (its deinit ran while a chain or a used chain held buffers).
    @usableFromInline var queueGone = false
    /// Once the queue has gone: the buffers its chains in flight held, which nothing gives back.
    @usableFromInline var retainedBuffers = 0
    /// Whether no token holds a buffer: every buffer is free, or (once the queue has gone) held by
    /// a chain that was in flight. A chain with segments and a used chain each hold one or more
    /// buffers, so the tokens are counted by the buffers alone (no count kept on the hot path);
    /// a chain with no segment holds nothing and never touches the state (``Chain``'s deinit).
    @usableFromInline var tokensHoldNothing: Bool { freeBufferCount &+ retainedBuffers == bufferCount }

    /// The queue is going: counts the buffers of the chains in flight, which no token holds and
    /// nothing will give back.
    @usableFromInline mutating func queueLeaving() {
        var retained = 0
        for head in 0..<ring.size where heads[head].inFlight {
            retained += Int(heads[head].segmentCount) + (heads[head].indirectTable == noBuffer ? 0 : 1)
        }
        retainedBuffers = retained
    }
    /// A used element's id must be below this to take the usual path of `takeUsed`: N, or 0
    /// under IN_ORDER, whose elements all go to the in-order take (``InOrderDriverState``).
    @usableFromInline var usedIDLimit: UInt32 = 0
    /// What VIRTIO_F_IN_ORDER adds (``InOrderDriverState``); disabled without it.
    @usableFromInline var inOrder = InOrderDriverState()

    /// - Parameter slots: The host address of each pool slot, `nil` for a slot that cannot be used.
    /// - Parameter pool: The bus address of the first slot; slot i is `bufferSize` bytes at
    ///   `pool + i · bufferSize`.
    /// - Parameter packed: The packed ring, for a packed queue (`ring` is then private memory,
    ///   which this state frees).
    init(
        ring: SplitRing,
        packed: PackedRing?,
        eventIndex: Bool,
        cursor: QueueCursor,
        slots: [UnsafeMutableRawPointer?],
        pool: UInt64,
        bufferSize: Int
    ) {
        let queueSize = ring.size
        self.ring = ring
        side = QueueSide(driver: true, ring: ring, packed: packed, eventIndex: eventIndex, cursor: cursor)
        descriptorNext = .allocate(capacity: queueSize)
        for index in 0..<queueSize {
            descriptorNext[index] = UInt16(truncatingIfNeeded: index + 1)
        }
        freeDescriptorCount = queueSize
        usedIDLimit = UInt32(queueSize)
        heads = .allocate(capacity: queueSize)
        heads.initialize(repeating: HeadRecord(), count: queueSize)
        buffers = .allocate(capacity: max(slots.count, 1))
        var next = noBuffer
        var usable = 0
        for index in slots.indices.reversed() {
            buffers[index] = BufferRecord(
                next: slots[index] == nil ? noBuffer : next,
                host: slots[index],
                address: pool &+ UInt64(index) &* UInt64(bufferSize)
            )
            if slots[index] != nil {
                next = UInt32(index)
                usable += 1
            }
        }
        bufferCount = usable
        freeBufferHead = next
        freeBufferCount = usable
    }

    /// A chain was dropped without being submitted or discarded: its descriptors and buffers go
    /// back to the free lists (those of a queue that has gone, which is then freed with the last
    /// buffer a token held). A chain with no segment holds nothing and touches nothing: its
    /// queue's state may be gone.
    static func chainDropped(_ state: UnsafeMutablePointer<DriverState>, head: UInt32) {
        guard head != noBuffer else { return }
        state.pointee.releaseUnsubmitted(head: head)
        state.tokenReleased()
    }

    /// A used chain was dropped without being freed: its buffers go back to the free list (as
    /// ``chainDropped(_:head:)``'s do).
    static func usedChainDropped(
        _ state: UnsafeMutablePointer<DriverState>,
        firstBuffer: UInt32,
        lastBuffer: UInt32,
        segmentCount: Int
    ) {
        state.pointee.releaseBuffers(first: firstBuffer, last: lastBuffer, count: segmentCount)
        state.tokenReleased()
    }

    /// Returns the descriptors and buffers of a chain that was never submitted (`head` is
    /// ``noBuffer`` for a chain with no segment, which holds nothing).
    @inlinable
    mutating func releaseUnsubmitted(head: UInt32) {
        guard head != noBuffer else { return }
        let record = heads[Int(head)]
        releaseDescriptors(head: UInt16(truncatingIfNeeded: head), record)
        releaseBuffers(first: record.firstBuffer, last: record.lastBuffer, count: Int(record.segmentCount))
        if inOrder.enabled { inOrderReleasedUnsubmitted(head: head) }
    }

    @usableFromInline func deallocate() {
        if side.packed != nil { ring.deallocatePrivate() }
        descriptorNext.deallocate()
        heads.deallocate()
        buffers.deallocate()
    }

    @inlinable @inline(__always)
    mutating func popDescriptor() -> UInt16 {
        let index = freeDescriptorHead
        freeDescriptorHead = descriptorNext[Int(index)]
        freeDescriptorCount &-= 1
        return index
    }

    @inlinable @inline(__always)
    mutating func pushDescriptor(_ index: UInt16) {
        descriptorNext[Int(index)] = freeDescriptorHead
        freeDescriptorHead = index
        freeDescriptorCount &+= 1
    }

    @inlinable @inline(__always)
    mutating func popBuffer() -> UInt32 {
        let index = freeBufferHead
        freeBufferHead = buffers[Int(index)].next
        freeBufferCount &-= 1
        return index
    }

    @inlinable @inline(__always)
    mutating func pushBuffer(_ index: UInt32) {
        buffers[Int(index)].next = freeBufferHead
        freeBufferHead = index
        freeBufferCount &+= 1
    }

    /// Returns the descriptors of a chain — linked head to last in `descriptorNext` when direct,
    /// the head alone plus the table's buffer when indirect — to the free lists.
    @inlinable @inline(__always)
    mutating func releaseDescriptors(head: UInt16, _ record: HeadRecord) {
        if record.indirectTable != noBuffer {
            pushDescriptor(head)
            pushBuffer(record.indirectTable)
        } else {
            descriptorNext[Int(record.lastDescriptor)] = freeDescriptorHead
            freeDescriptorHead = head
            freeDescriptorCount &+= Int(record.segmentCount)
        }
    }

    /// Returns the descriptors of the chain in flight whose head is `head`, described by
    /// `record`, and marks it done (the caller accounts for it: `takeUsed` consumes its used entry,
    /// `takeAbandoned` counts it in `abandonedCount`).
    @inlinable @inline(__always)
    mutating func retire(_ head: UInt16, _ record: HeadRecord) {
        releaseDescriptors(head: head, record)
        heads[Int(head)].inFlight = false
    }

    /// Returns a chain's `count` buffers, linked from `first` to `last`, to the pool. Every chain
    /// that holds buffers holds one or more: a chain's record is taken with its first segment, and
    /// `submit` refuses an empty chain, so a used chain has at least one.
    @inlinable @inline(__always)
    mutating func releaseBuffers(first: UInt32, last: UInt32, count: Int) {
        buffers[Int(last)].next = freeBufferHead
        freeBufferHead = first
        freeBufferCount &+= count
    }
}
