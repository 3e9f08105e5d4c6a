/// A chain of buffers the driver is building, not yet made available to the device.
///
/// Create one with ``DriverQueue/makeChain()``, add device-readable segments and then
/// device-writable ones with ``DriverQueue/appendReadable(to:count:_:)`` and
/// ``DriverQueue/appendWritable(to:capacity:)``, and hand it over with ``DriverQueue/submit(_:)``.
/// A chain you decide not to send goes back with ``DriverQueue/discard(_:)``.
///
/// The chain is `~Copyable`: it can be submitted or discarded once, and the compiler says so.
///
/// - Warning: A chain holds pool buffers from its first segment on. One that goes out of scope
///   without ``DriverQueue/submit(_:)`` or ``DriverQueue/discard(_:)`` — after an append threw
///   ``VirtqueueError/Code-swift.struct/poolExhausted``, say — keeps them from the pool for the
///   queue's lifetime.
public struct Chain: ~Copyable {
    @usableFromInline var firstBuffer: UInt32 = noBuffer
    @usableFromInline var lastBuffer: UInt32 = noBuffer
    @usableFromInline var _segmentCount = 0
    @usableFromInline var _readableByteCount = 0
    @usableFromInline var _writableByteCount = 0
    @usableFromInline var hasWritable = false
    /// The pool buffer that will hold the indirect table, or ``noBuffer`` while direct.
    @usableFromInline var indirectTable: UInt32 = noBuffer
    @usableFromInline let queueIdentity: UInt32

    @inlinable
    init(queueIdentity: UInt32) {
        self.queueIdentity = queueIdentity
    }

    /// The number of segments appended so far.
    @inlinable public var segmentCount: Int { _segmentCount }
    /// Bytes in the device-readable segments.
    @inlinable public var readableByteCount: Int { _readableByteCount }
    /// Bytes of room in the device-writable segments.
    @inlinable public var writableByteCount: Int { _writableByteCount }
    /// Whether the chain will be sent through an indirect descriptor table.
    @inlinable public var isIndirect: Bool { indirectTable != noBuffer }
}

/// A chain the device has returned (or, after the queue broke, one the driver took back).
///
/// Read what the device wrote with ``DriverQueue/forEachSegment(of:_:)`` or
/// ``DriverQueue/copyWrittenBytes(of:into:)``, then give its buffers back with
/// ``DriverQueue/free(_:)`` — the seed's `virtqueue_gather_used` loop that frees each buffer.
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

    @inlinable
    init(
        id: UInt16,
        writtenByteCount: Int,
        status: Status,
        firstBuffer: UInt32,
        lastBuffer: UInt32,
        segmentCount: Int,
        queueIdentity: UInt32
    ) {
        self.id = id
        self.writtenByteCount = writtenByteCount
        self.status = status
        self.firstBuffer = firstBuffer
        self.lastBuffer = lastBuffer
        self.segmentCount = segmentCount
        self.queueIdentity = queueIdentity
    }
}
