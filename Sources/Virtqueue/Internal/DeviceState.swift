/// One validated segment of a request, copied out of shared memory into the device's private
/// memory: the only copy the device uses after validation (no double fetch). The address was
/// translated once, at validation, into this process's pointer.
@usableFromInline
internal struct SegmentRecord {
    /// The segment's first byte, in this process (validated inside memory and the buffer area).
    @usableFromInline var host: UnsafeMutableRawPointer?
    @usableFromInline var length: UInt32 = 0
    /// In the overflow store: the next segment of the same request, or of the free list.
    @usableFromInline var next: UInt32 = noBuffer

    @inlinable init() {}
}

/// What the device holds for one head: the request that starts there, validated and copied into
/// private memory. Its first ``DeviceState/inlineSegmentCount`` segments sit in the head's own
/// slots (after it in ``DeviceState/records``); any further ones in the overflow store, linked from
/// ``overflowFirst`` to ``overflowLast``.
///
/// Device-readable segments come before device-writable ones (the parser refuses any other
/// order), so the first ``readableSegmentCount`` segments are the readable ones and the rest
/// the writable ones: no per-segment flag.
@usableFromInline
internal struct HeldHead {
    @usableFromInline var readableByteCount = 0
    @usableFromInline var writableByteCount = 0
    /// The request's segments; 0 while the device does not hold the head (a chain has at least one).
    @usableFromInline var segmentCount: UInt32 = 0
    @usableFromInline var readableSegmentCount: UInt32 = 0
    @usableFromInline var overflowFirst: UInt32 = noBuffer
    @usableFromInline var overflowLast: UInt32 = noBuffer

    @inlinable init() {}
}

/// Everything the device keeps in private memory: its side of the ring and one record per head
/// with the segments of the request it holds there.
@usableFromInline
internal struct DeviceState: TokenHoldingState {
    /// Segments each head keeps in its own slots; a longer chain puts the rest in the overflow store.
    @usableFromInline static var inlineSegmentCount: Int { 4 }
    /// Where a head's segment slots start in its record.
    @usableFromInline static var slotsOffset: Int { MemoryLayout<HeldHead>.stride }
    /// The bytes of one head's record: the ``HeldHead`` and its segment slots.
    @usableFromInline static var recordStride: Int {
        slotsOffset + inlineSegmentCount * MemoryLayout<SegmentRecord>.stride
    }

    /// What the device holds at `head` (below N).
    @inlinable @inline(__always)
    func record(_ head: UInt16) -> UnsafeMutablePointer<HeldHead> {
        (records + Int(head) &* Self.recordStride).assumingMemoryBound(to: HeldHead.self)
    }

    /// The segment slots of `head` (below N).
    @inlinable @inline(__always)
    func slots(_ head: UInt16) -> UnsafeMutablePointer<SegmentRecord> {
        (records + (Int(head) &* Self.recordStride &+ Self.slotsOffset)).assumingMemoryBound(to: SegmentRecord.self)
    }

    /// The ring, resolved at set-up. Kept here, behind the queue's one pointer, so that the hot
    /// path reads the fields it needs instead of copying the whole ring.
    @usableFromInline let ring: SplitRing
    /// The translation table for buffers and indirect tables.
    @usableFromInline let buffers: AddressMap
    /// The device's side of the ring: `used.idx` published, `avail.idx` consumed.
    @usableFromInline var side: QueueSide
    /// Whether VIRTIO_F_INDIRECT_DESC was negotiated.
    @usableFromInline let indirectAllowed: Bool
    /// The queue's identity, for the message of a refused token (a request is matched to its
    /// queue by this state's address).
    @usableFromInline let identity: UInt32

    /// One record per head, ``recordStride`` bytes each: what the device holds there
    /// (``HeldHead``, its ``HeldHead/segmentCount`` 0 if nothing), followed by the head's own
    /// ``inlineSegmentCount`` segment slots, so that a request's record and its first segments
    /// are found from one address.
    @usableFromInline let records: UnsafeMutableRawPointer
    /// How many segments the parser's loop stores before it hands the chain to the out-of-line
    /// path: `min(inlineSegmentCount, N)`, so that the loop itself cannot visit more than N
    /// descriptors (the out-of-line path counts them).
    @usableFromInline let hotSegmentLimit: Int
    @usableFromInline var takenCount = 0
    /// Whether the queue has gone (its deinit ran while requests were taken).
    @usableFromInline var queueGone = false
    /// The tokens are the requests taken and not completed.
    @usableFromInline var tokensHoldNothing: Bool { takenCount == 0 }
    /// Nothing to forget: a request is the device's only hold on the state.
    @usableFromInline mutating func queueLeaving() {}

    /// Packed ring: how many ring descriptors the list of each buffer ID the device holds took,
    /// by which its used position advances when it is used; `nil` for the split ring.
    @usableFromInline let packedListLengths: UnsafeMutablePointer<UInt16>?

    /// The overflow store: the segments of long chains past their head's slots, free-listed.
    @usableFromInline let segments: UnsafeMutablePointer<SegmentRecord>
    /// At most this many segments are held across all requests taken and not completed.
    @usableFromInline let segmentCapacity: Int
    /// How many more segments the device may hold: the capacity less the segments (inline and
    /// overflow) of the requests taken and not completed.
    @usableFromInline var segmentRoom: Int
    @usableFromInline var freeSegmentHead: UInt32
    /// An available entry's head must be below this to take the usual path of `nextRequest`: N,
    /// or 0 under IN_ORDER, whose requests all take the in-order path (``InOrderDeviceState``).
    @usableFromInline var headLimit: Int
    /// What VIRTIO_F_IN_ORDER adds (``InOrderDeviceState``); disabled without it.
    @usableFromInline var inOrder = InOrderDeviceState()
    /// OR-ed into a written length before `complete` compares it with the request's writable
    /// bytes: 0, or under IN_ORDER the top bit, which makes every in-order completion fail the
    /// comparison and take the path out of line (one test for both instead of two).
    @usableFromInline var completionMask: UInt = 0

    init(
        setup: QueueSetup,
        eventIndex: Bool,
        cursor: QueueCursor,
        segmentCapacity: Int,
        indirectAllowed: Bool,
        identity: UInt32
    ) {
        self.indirectAllowed = indirectAllowed
        let queueSize = setup.ring.size
        ring = setup.ring
        buffers = setup.buffers
        side = QueueSide(
            driver: false,
            ring: setup.ring,
            packed: setup.packed,
            eventIndex: eventIndex,
            cursor: cursor
        )
        packedListLengths = setup.packed == nil ? nil : .allocate(capacity: queueSize)
        self.identity = identity
        records = .allocate(
            byteCount: queueSize * Self.recordStride,
            alignment: max(MemoryLayout<HeldHead>.alignment, MemoryLayout<SegmentRecord>.alignment)
        )
        for head in 0..<queueSize {
            let record = records + head * Self.recordStride
            record.initializeMemory(as: HeldHead.self, repeating: HeldHead(), count: 1)
            (record + Self.slotsOffset).initializeMemory(
                as: SegmentRecord.self,
                repeating: SegmentRecord(),
                count: Self.inlineSegmentCount
            )
        }
        hotSegmentLimit = min(Self.inlineSegmentCount, queueSize)
        headLimit = queueSize
        // Overflow segments never exceed the segments held, which never exceed the capacity.
        segments = .allocate(capacity: segmentCapacity)
        segments.initialize(repeating: SegmentRecord(), count: segmentCapacity)
        for index in 0..<segmentCapacity {
            segments[index].next = index + 1 < segmentCapacity ? UInt32(index + 1) : noBuffer
        }
        self.segmentCapacity = segmentCapacity
        segmentRoom = segmentCapacity
        freeSegmentHead = 0
    }

    /// A request was dropped without being completed: it is completed with 0 bytes written (if
    /// the queue is still there and works), so the driver gets its buffers back.
    static func requestDropped(_ state: UnsafeMutablePointer<DeviceState>, id: UInt16) {
        let writable = state.pointee.release(head: id)
        state.pointee.takenCount &-= 1
        guard state.tokenReleased() else { return }
        guard state.pointee.side.broken == nil else { return }
        if state.pointee.side.packed != nil {
            state.pointee.storePackedUsed(id: id, length: 0, writable: writable, publish: true)
            return
        }
        if state.pointee.inOrder.enabled {
            state.pointee.completeInOrder(id, length: 0, writable: writable, publish: true)
            return
        }
        let element = state.pointee.ring.usedElement(state.pointee.side.published)
        element.storeBytes(of: UInt32(id).littleEndian, as: UInt32.self)
        element.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        state.pointee.side.publish()
    }

    @usableFromInline func deallocate() {
        if side.packed != nil { ring.deallocatePrivate() }
        packedListLengths?.deallocate()
        records.deallocate()
        segments.deallocate()
        buffers.deallocate()
        inOrder.deallocate()
    }

    /// The error for a request of the queue whose state is `other` passed to `call` on the queue
    /// whose state is `state`, naming both queues.
    @usableFromInline @inline(never)
    static func notOwned(
        _ other: UnsafeMutablePointer<DeviceState>,
        passedTo call: StaticString,
        on state: UnsafeMutablePointer<DeviceState>
    ) -> VirtqueueError {
        .notOwned("request", of: other.pointee.identity, passedTo: call, on: state.pointee.identity)
    }

    /// Gives back what the request at `head` held (its overflow segments to the free list) and
    /// marks the head free.
    ///
    /// - Returns: The request's writable byte count.
    @inlinable @inline(__always)
    mutating func release(head: UInt16) -> Int {
        let record = self.record(head)
        let count = record.pointee.segmentCount
        if Int(count) > Self.inlineSegmentCount {
            segments[Int(record.pointee.overflowLast)].next = freeSegmentHead
            freeSegmentHead = record.pointee.overflowFirst
        }
        segmentRoom &+= Int(count)
        record.pointee.segmentCount = 0
        return record.pointee.writableByteCount
    }
}
