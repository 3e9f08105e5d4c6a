/// A chain of buffers the driver is building, not yet made available to the device.
///
/// Create one with ``DriverQueue/makeChain()``, add device-readable segments and then
/// device-writable ones with ``DriverQueue/appendReadable(to:count:_:)`` and
/// ``DriverQueue/appendWritable(to:capacity:)``, and hand it over with ``DriverQueue/submit(_:publish:)``.
/// A chain you decide not to send goes back with ``DriverQueue/discard(_:)``.
///
/// The chain is `~Copyable`: it can be submitted or discarded once, and the compiler says so.
/// A chain that is dropped instead — because an append threw ``VirtqueueError/Code-swift.struct/poolExhausted``,
/// or the caller's own code threw between two appends — gives its buffers and descriptors back to
/// its queue when it goes out of scope: no error leaks a buffer. (A chain that outlives its queue
/// gives nothing back; there is nothing left to give it to.)
///
/// A chain belongs to the queue that made it — every other queue refuses it
/// (<doc:TrustModel#A-token-belongs-to-its-queue>) — and to the thread that uses that queue; it
/// is not `Sendable`.
@frozen
public struct Chain: ~Copyable {
    /// The chain's head descriptor, which indexes its record in the queue's private state
    /// (``HeadRecord``), or ``noBuffer`` while the chain has no segment. The token carries only
    /// what its deinit and the owner check need; everything else about the chain is in the record.
    @usableFromInline var head: UInt32 = noBuffer
    @usableFromInline let queueIdentity: UInt32
    /// The queue's private state, where a dropped chain gives its buffers back. It outlives the
    /// queue while a chain or a used chain holds buffers (``DriverState/tokensHoldNothing``); a
    /// chain with no segment never touches it.
    @usableFromInline let state: UnsafeMutablePointer<DriverState>

    @inlinable
    init(queueIdentity: UInt32, state: UnsafeMutablePointer<DriverState>) {
        self.queueIdentity = queueIdentity
        self.state = state
    }

    deinit {
        DriverState.chainDropped(state, head: head)
    }

    /// Ends the chain once the queue has taken (or released) its buffers: no deinit runs.
    @inlinable @inline(__always)
    consuming func end() {
        discard self
    }

    /// The chain's record in its queue's private state, or `nil` while it has no segment.
    @inlinable var record: HeadRecord? {
        head == noBuffer ? nil : state.pointee.heads[Int(head)]
    }

    /// The number of segments appended so far.
    @inlinable public var segmentCount: Int { Int(record?.segmentCount ?? 0) }
    /// Bytes in the device-readable segments.
    public var readableByteCount: Int {
        guard let record else { return 0 }
        var total = 0
        var buffer = record.firstBuffer
        for _ in 0..<record.segmentCount {
            let segment = state.pointee.buffers[Int(buffer)]
            if segment.flags & BufferRecord.writableFlag == 0 { total += Int(segment.length) }
            buffer = segment.next
        }
        return total
    }
    /// Bytes of room in the device-writable segments.
    @inlinable public var writableByteCount: Int { Int(record?.writableByteCount ?? 0) }
    /// Whether the chain will be sent through an indirect descriptor table.
    @inlinable public var isIndirect: Bool { (record?.indirectTable ?? noBuffer) != noBuffer }
}

/// A chain the device has returned (or, after the queue broke, one the driver took back).
///
/// Read what the device wrote with ``DriverQueue/forEachSegment(of:_:)`` or
/// ``DriverQueue/copyWrittenBytes(of:into:)``, then give its buffers back with
/// ``DriverQueue/free(_:)`` — the seed's `virtqueue_gather_used` loop that frees each buffer. It
/// belongs to the queue that returned it: every other queue refuses it
/// (<doc:TrustModel#A-token-belongs-to-its-queue>).
///
/// A used chain that is dropped instead of freed — the caller's code threw while reading it, or
/// another queue refused it — gives its buffers back to its own queue when it goes out of scope,
/// as a dropped ``Chain`` does: no caller error leaks a buffer.
@frozen
public struct UsedChain: ~Copyable {
    /// How the chain came back.
    public enum Status: Hashable, Sendable {
        /// The device completed it through the used ring.
        case completed
        /// The queue broke (a violation, or the peer died) while the chain was in flight; the
        /// device never completed it. The associated code says why the queue broke.
        case abandoned(VirtqueueError.Code)
    }

    /// The chain's id: its head descriptor index, as the device saw it.
    public let id: UInt16
    /// Bytes the device reports having written into the writable segments (the used element's
    /// `len`, checked against the chain's writable bytes).
    public let writtenByteCount: Int
    /// Whether the chain was completed or abandoned.
    public let status: Status
    @usableFromInline let firstBuffer: UInt32
    @usableFromInline let lastBuffer: UInt32
    @usableFromInline let segmentCount: Int
    @usableFromInline let queueIdentity: UInt32
    /// The queue's private state, where a dropped used chain gives its buffers back; it outlives
    /// the queue while a token holds buffers (``DriverState/tokensHoldNothing``).
    @usableFromInline let state: UnsafeMutablePointer<DriverState>

    @inlinable
    init(
        id: UInt16,
        writtenByteCount: Int,
        status: Status,
        firstBuffer: UInt32,
        lastBuffer: UInt32,
        segmentCount: Int,
        queueIdentity: UInt32,
        state: UnsafeMutablePointer<DriverState>
    ) {
        self.id = id
        self.writtenByteCount = writtenByteCount
        self.status = status
        self.firstBuffer = firstBuffer
        self.lastBuffer = lastBuffer
        self.segmentCount = segmentCount
        self.queueIdentity = queueIdentity
        self.state = state
    }

    deinit {
        DriverState.usedChainDropped(
            state,
            firstBuffer: firstBuffer,
            lastBuffer: lastBuffer,
            segmentCount: segmentCount
        )
    }

    /// Ends the used chain once its queue has taken its buffers back: no deinit runs.
    @inlinable @inline(__always)
    consuming func end() {
        discard self
    }
}

extension UsedChain {
    /// The used chain for chain `head`, described by `record`, which the device completed with
    /// `written` bytes (a used element's `len`, or under IN_ORDER a chain's whole writable room).
    @inlinable @inline(__always)
    init(
        completed head: UInt16,
        written: some FixedWidthInteger,
        _ record: HeadRecord,
        queueIdentity: UInt32,
        state: UnsafeMutablePointer<DriverState>
    ) {
        self.init(
            id: head,
            writtenByteCount: Int(truncatingIfNeeded: written),
            status: .completed,
            firstBuffer: record.firstBuffer,
            lastBuffer: record.lastBuffer,
            segmentCount: Int(record.segmentCount),
            queueIdentity: queueIdentity,
            state: state
        )
    }
}
