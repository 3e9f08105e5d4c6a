/// One validated segment of a request, copied out of shared memory into the device's private
/// store: the only copy the device uses after validation (no double fetch). The address was
/// translated once, at validation, into this process's pointer.
@usableFromInline
internal struct SegmentRecord {
    /// The segment's first byte, in this process (validated inside memory and the buffer area).
    @usableFromInline var host: UnsafeMutableRawPointer?
    @usableFromInline var length: UInt32 = 0
    @usableFromInline var writable = false
    /// Next segment of the same request, or of the free list.
    @usableFromInline var next: UInt32 = noBuffer

    @inlinable init() {}
}

/// Everything the device keeps in private memory: its side of the ring, the heads it holds, and
/// the segments of the requests it has taken.
@usableFromInline
internal struct DeviceState: TokenHoldingState {
    /// The ring, resolved at set-up. Kept here, behind the queue's one pointer, so that the hot
    /// path reads the fields it needs instead of copying the whole ring.
    @usableFromInline let ring: SplitRing
    /// The translation table for buffers and indirect tables.
    @usableFromInline let buffers: AddressMap
    /// The device's side of the ring: `used.idx` published, `avail.idx` consumed.
    @usableFromInline var side: QueueSide

    /// Whether the device holds head `i` (taken and not yet completed).
    @usableFromInline let headTaken: UnsafeMutablePointer<Bool>
    @usableFromInline var takenCount = 0
    /// Whether the queue has gone (its deinit ran while requests were taken).
    @usableFromInline var queueGone = false
    /// The live tokens are the requests taken and not completed.
    @usableFromInline var liveTokenCount: Int {
        get { takenCount }
        set { takenCount = newValue }
    }

    @usableFromInline let segments: UnsafeMutablePointer<SegmentRecord>
    @usableFromInline let segmentCapacity: Int
    @usableFromInline var freeSegmentHead: UInt32
    @usableFromInline var freeSegmentCount: Int

    init(setup: QueueSetup, eventIndex: Bool, cursor: QueueCursor, segmentCapacity: Int) {
        let queueSize = setup.ring.size
        ring = setup.ring
        buffers = setup.buffers
        side = QueueSide(driver: false, ring: setup.ring, eventIndex: eventIndex, cursor: cursor)
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

    /// A request was dropped without being completed: it is completed with 0 bytes written (if
    /// the queue is still there and works), so the driver gets its buffers back.
    static func requestDropped(
        _ state: UnsafeMutablePointer<DeviceState>,
        id: UInt16,
        firstSegment: UInt32,
        lastSegment: UInt32,
        segmentCount: Int
    ) {
        guard state.tokenDropped() else { return }
        state.pointee.releaseSegments(first: firstSegment, last: lastSegment, count: segmentCount)
        state.pointee.headTaken[Int(id)] = false
        guard state.pointee.side.broken == nil else { return }
        let element = state.pointee.ring.usedElement(state.pointee.side.published)
        element.storeBytes(of: UInt32(id).littleEndian, as: UInt32.self)
        element.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        state.pointee.side.publish()
    }

    @usableFromInline func deallocate() {
        headTaken.deallocate()
        segments.deallocate()
        buffers.deallocate()
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
