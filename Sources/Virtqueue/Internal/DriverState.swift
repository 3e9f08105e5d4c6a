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
    /// The descriptor a direct chain uses for this buffer.
    @usableFromInline var descriptor: UInt16
    @usableFromInline var flags: UInt8

    @inlinable
    init(next: UInt32) {
        self.next = next
        self.length = 0
        self.descriptor = 0
        self.flags = 0
    }
}

/// The driver's private record of a chain in flight, indexed by its head descriptor.
@usableFromInline
internal struct HeadRecord {
    @usableFromInline var firstBuffer: UInt32 = noBuffer
    @usableFromInline var lastBuffer: UInt32 = noBuffer
    @usableFromInline var segmentCount: UInt32 = 0
    @usableFromInline var writableByteCount: UInt64 = 0
    /// The pool buffer holding the indirect table, or ``noBuffer`` for a direct chain.
    @usableFromInline var indirectTable: UInt32 = noBuffer
    @usableFromInline var inFlight = false

    @inlinable init() {}

    @inlinable
    init(
        firstBuffer: UInt32,
        lastBuffer: UInt32,
        segmentCount: UInt32,
        writableByteCount: UInt64,
        indirectTable: UInt32,
        inFlight: Bool
    ) {
        self.firstBuffer = firstBuffer
        self.lastBuffer = lastBuffer
        self.segmentCount = segmentCount
        self.writableByteCount = writableByteCount
        self.indirectTable = indirectTable
        self.inFlight = inFlight
    }
}

/// Marks the end of a buffer list.
@usableFromInline
internal let noBuffer = UInt32.max

/// Everything the driver keeps in private memory: free descriptors, chains in flight, the
/// buffer pool, the ring indices it has published and seen. Nothing here is ever read back
/// from shared memory, so a hostile device cannot corrupt the driver's bookkeeping.
@usableFromInline
internal struct DriverState {
    // Ring indices.
    @usableFromInline var nextAvailable: UInt16 = 0
    @usableFromInline var lastNotifyCheck: UInt16 = 0
    /// Submissions published since `lastNotifyCheck` (the true distance, which 16 bits can't hold).
    @usableFromInline var submittedSinceNotifyCheck = 0
    @usableFromInline var lastUsed: UInt16 = 0
    /// The last `used.idx` read and validated (at most N past `lastUsed`); elements before it are
    /// taken without reading the index again.
    @usableFromInline var usedShadow: UInt16 = 0

    // Descriptors: a free list threaded through `descriptorNext`. The descriptors of a direct
    // chain being built or in flight stay linked there in chain order, head to last, so the
    // chain goes back to the free list in one step.
    @usableFromInline let descriptorNext: UnsafeMutablePointer<UInt16>
    @usableFromInline var freeDescriptorHead: UInt16 = 0
    @usableFromInline var freeDescriptorCount: Int

    // Chains in flight, by head descriptor.
    @usableFromInline let heads: UnsafeMutablePointer<HeadRecord>
    @usableFromInline var inFlightCount = 0
    @usableFromInline var abandonCursor = 0

    // The buffer pool: fixed-size slots in the data area, with a free list.
    @usableFromInline let buffers: UnsafeMutablePointer<BufferRecord>
    @usableFromInline let bufferCount: Int
    @usableFromInline var freeBufferHead: UInt32
    @usableFromInline var freeBufferCount: Int

    @usableFromInline var broken: VirtqueueError?

    init(queueSize: Int, bufferCount: Int) {
        descriptorNext = .allocate(capacity: queueSize)
        for index in 0..<queueSize {
            descriptorNext[index] = UInt16(truncatingIfNeeded: index + 1)
        }
        freeDescriptorCount = queueSize
        heads = .allocate(capacity: queueSize)
        heads.initialize(repeating: HeadRecord(), count: queueSize)
        buffers = .allocate(capacity: max(bufferCount, 1))
        for index in 0..<bufferCount {
            buffers[index] = BufferRecord(next: index + 1 < bufferCount ? UInt32(index + 1) : noBuffer)
        }
        self.bufferCount = bufferCount
        freeBufferHead = bufferCount > 0 ? 0 : noBuffer
        freeBufferCount = bufferCount
    }

    func deallocate() {
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
    mutating func releaseDescriptors(head: UInt16, lastBuffer: UInt32, count: Int, indirectTable: UInt32) {
        if indirectTable != noBuffer {
            pushDescriptor(head)
            pushBuffer(indirectTable)
        } else {
            descriptorNext[Int(buffers[Int(lastBuffer)].descriptor)] = freeDescriptorHead
            freeDescriptorHead = head
            freeDescriptorCount &+= count
        }
    }

    /// Returns the descriptors of the chain in flight whose head is `head` and marks it done.
    @inlinable @inline(__always)
    mutating func retire(_ head: UInt16) {
        let record = heads[Int(head)]
        releaseDescriptors(
            head: head,
            lastBuffer: record.lastBuffer,
            count: Int(record.segmentCount),
            indirectTable: record.indirectTable
        )
        heads[Int(head)].inFlight = false
        inFlightCount &-= 1
    }

    /// Returns a chain's `count` buffers, linked from `first` to `last`, to the pool.
    @inlinable @inline(__always)
    mutating func releaseBuffers(first: UInt32, last: UInt32, count: Int) {
        guard count > 0 else { return }
        buffers[Int(last)].next = freeBufferHead
        freeBufferHead = first
        freeBufferCount &+= count
    }
}
