/// One validated segment of a request, copied out of shared memory into the device's private
/// store: the only copy the device uses after validation (no double fetch).
@usableFromInline
internal struct SegmentRecord {
    /// Region offset of the segment's first byte (validated inside the data area).
    @usableFromInline var offset: UInt64 = 0
    @usableFromInline var length: UInt32 = 0
    @usableFromInline var writable = false
    /// Next segment of the same request, or of the free list.
    @usableFromInline var next: UInt32 = noBuffer

    @inlinable init() {}
}

/// Everything the device keeps in private memory: the indices it has seen and published, the
/// heads it holds, and the segments of the requests it has taken.
@usableFromInline
internal struct DeviceState {
    /// The ring's offsets. Kept here, behind the queue's one pointer, so that the hot path reads
    /// the fields it needs instead of copying the whole geometry.
    @usableFromInline let ring: RingGeometry
    @usableFromInline var lastAvailable: UInt16 = 0
    /// The last `avail.idx` read and validated (at most N past `lastAvailable`); entries before
    /// it are consumed without reading the index again.
    @usableFromInline var availableShadow: UInt16 = 0
    @usableFromInline var nextUsed: UInt16 = 0
    @usableFromInline var lastNotifyCheck: UInt16 = 0
    /// Completions published since `lastNotifyCheck` (the true distance, which 16 bits can't hold).
    @usableFromInline var completedSinceNotifyCheck = 0

    /// Whether the device holds head `i` (taken and not yet completed).
    @usableFromInline let headTaken: UnsafeMutablePointer<Bool>
    @usableFromInline var takenCount = 0

    @usableFromInline let segments: UnsafeMutablePointer<SegmentRecord>
    @usableFromInline let segmentCapacity: Int
    @usableFromInline var freeSegmentHead: UInt32
    @usableFromInline var freeSegmentCount: Int

    @usableFromInline var broken: VirtqueueError?

    init(ring: RingGeometry, segmentCapacity: Int) {
        let queueSize = ring.size
        self.ring = ring
        headTaken = .allocate(capacity: queueSize)
        headTaken.initialize(repeating: false, count: queueSize)
        segments = .allocate(capacity: segmentCapacity)
        segments.initialize(repeating: SegmentRecord(), count: segmentCapacity)
        for index in 0..<segmentCapacity {
            segments[index].next = index + 1 < segmentCapacity ? UInt32(index + 1) : noBuffer
        }
        self.segmentCapacity = segmentCapacity
        freeSegmentHead = 0
        freeSegmentCount = segmentCapacity
    }

    func deallocate() {
        headTaken.deallocate()
        segments.deallocate()
    }

    /// Returns `count` segments starting at `first` to the free list.
    @inlinable @inline(__always)
    mutating func releaseSegments(first: UInt32, last: UInt32, count: Int) {
        guard count > 0 else { return }
        segments[Int(last)].next = freeSegmentHead
        freeSegmentHead = first
        freeSegmentCount &+= count
    }
}
