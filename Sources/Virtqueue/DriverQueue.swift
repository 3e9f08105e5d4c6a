/// The driver's end of a virtqueue, split or packed: it offers buffers to the device and takes
/// them back.
///
/// This is the seL4 libvirtqueue driver (`virtqueue_driver_t`) rebuilt to virtio 1.x, byte for
/// byte, with two differences that matter. First, it keeps all of its bookkeeping — the free
/// descriptor list, the chains in flight, the buffer pool — in private memory, and treats every
/// value the device writes as untrusted: a malformed used ring breaks the queue with a typed
/// error instead of corrupting the driver. Second, chains are `~Copyable` tokens, so a chain is
/// submitted once and freed once.
///
/// Buffers come from a pool of fixed-size slots carved out of the region's data area. The seed's
/// eight steps, on the driver side:
///
/// ```swift
/// var chain = driver.makeChain()                                       // 1. new available entry
/// try driver.appendReadable(to: &chain, copying: request)              // 2. chain buffers
/// try driver.appendWritable(to: &chain, capacity: 512)
/// try driver.submit(chain)
/// try driver.notifyIfNeeded()                                          // 3. kick the device
/// // … the device does steps 4–7 …
/// try driver.waitForUsed()
/// if let used = try driver.takeUsed() {                                // 8. take the used entry
///     try driver.forEachSegment(of: used) { isWritable, bytes in … }   //    and iterate its buffers
///     try driver.free(used)                                            //    to free them
/// }
/// ```
///
/// The queue is generic over its region and notifier so that every call specialises: the hot
/// path makes no allocation, takes no lock, calls no existential and retains nothing.
///
/// ### Descriptors and pool buffers
///
/// The pool is independent of the queue size: ``bufferCount`` buffers and ``queueSize``
/// descriptors, each with its own free list. A segment of a direct chain takes one of each; a
/// segment of an indirect chain takes only a buffer (its descriptor lives in the chain's table,
/// itself one more buffer), so an indirect chain can carry more buffers than there are
/// descriptors. An append to a chain of one or more segments that finds no free descriptor moves
/// the chain into an indirect table when VIRTIO_F_INDIRECT_DESC is negotiated; otherwise, and
/// for a chain's first segment (its head), it throws
/// ``VirtqueueError/Code-swift.struct/ringFull``. One that finds no free buffer throws
/// ``VirtqueueError/Code-swift.struct/poolExhausted``. ``freeDescriptorCount`` and
/// ``freeBufferCount`` count the two; a chain's descriptors come back when ``takeUsed()`` takes it
/// (its head is free for reuse at once), its buffers when ``free(_:)`` gives them back.
///
/// Each chain has one private record, indexed by its head descriptor, taken with its first
/// segment: the ``Chain`` token carries only the head and its queue's identity, and each append
/// writes its descriptor straight into the ring, where ``submit(_:publish:)`` publishes it.
///
/// ### Split and packed rings
///
/// The ring format is the placement's (``QueuePlacement/format``; a region's, from its header),
/// with ``Features/ringPacked`` set exactly for the packed ring. Every call, and the ``Chain``
/// and ``UsedChain`` tokens, are the same for both; what differs is where the bytes go
/// (`docs/wire-format.md` §12.7):
///
/// - On the packed ring a chain's head descriptor index is its buffer ID, and its appends write
///   into the queue's private memory: ``submit(_:publish:)`` writes the chain's descriptors at
///   consecutive ring positions, the first one's `flags` last. A staged submission holds back
///   that `flags` until the next publication.
/// - ``cursor`` holds positions with their wrap counters (bit 15) instead of free-running indices.
/// - ``freeDescriptorCount`` is also the room left in the packed ring: a chain in flight takes
///   one ring descriptor per segment, or one when indirect.
///
/// ### IN_ORDER
///
/// With ``Features/inOrder`` negotiated the calls are the same, on either ring; three things
/// differ (docs/wire-format.md §6.4, §12.6 for the packed ring):
///
/// - The device returns chains in the order they were submitted, and may report several with one
///   used element. ``takeUsed()`` still returns one ``UsedChain`` per chain, in order: the
///   batch's earlier chains with their whole writable room as ``UsedChain/writtenByteCount``
///   (the spec's "used completely"), the last with the length the device wrote. A device that
///   returns a chain out of order, or reports more than is in flight, breaks the queue
///   (``VirtqueueError/Code-swift.struct/usedOutOfOrder``,
///   ``VirtqueueError/Code-swift.struct/usedPastInFlight``). On the packed ring the batch is one
///   used descriptor at the batch's first position, and the driver's used position skips the
///   batch's descriptors; a batch that reaches a chain submitted with `publish: false` and not yet
///   published also breaks the queue (``VirtqueueError/Code-swift.struct/usedPastInFlight``).
/// - Chains use descriptors in ring order — each takes the ones after the last chain's, from 0,
///   wrapping after N − 1 — as the spec asks of an in-order driver. On the packed ring the run
///   starts at the driver's position, so a chain's id (its buffer ID) is the ring index of its
///   first descriptor.
/// - So the driver builds **one chain at a time**: a chain's first append throws
///   ``VirtqueueError/Code-swift.struct/chainInProgress`` while another chain has segments and
///   is neither submitted nor discarded (the refused chain is unchanged; submit or discard the
///   other, then append again). A chain discarded or dropped gives its descriptors back to be
///   the next ones taken.
///
/// A queue without IN_ORDER runs exactly its usual path: the in-order work hangs off its cold
/// branches.
public struct DriverQueue<Memory: GuestMemory & ~Copyable, Notify: Notifier>: ~Copyable {
    /// The memory the rings and buffers live in; the queue owns it (it is released with the queue).
    @usableFromInline let memory: Memory
    /// The notifier this queue kicks the device through and waits on for used buffers.
    public let notifier: Notify
    /// The features negotiated for this queue.
    public let features: Features
    /// The size of each pool buffer, in bytes.
    public let bufferSize: Int
    /// A chain grows into an indirect table once it has more segments than this (when
    /// VIRTIO_F_INDIRECT_DESC is negotiated), or when descriptors run out.
    public let indirectThreshold: Int
    @usableFromInline let state: UnsafeMutablePointer<DriverState>
    @usableFromInline let queueIdentity: UInt32
    @usableFromInline let indirect: Bool
    /// A direct chain with fewer segments than this takes its next segment without moving into
    /// an indirect table or growing too long: the smaller of the queue size and, when
    /// VIRTIO_F_INDIRECT_DESC is negotiated, ``indirectThreshold``.
    @usableFromInline let directLimit: Int
    /// Bus address of the first pool buffer.
    @usableFromInline let poolStart: UInt64

    /// Builds the driver's end of the ring `placement` describes in `memory`, with a pool of
    /// buffers in the bus range `pool`.
    ///
    /// - Parameters:
    ///   - memory: The guest memory; the queue owns it from now on.
    ///   - placement: Where the ring lies and where it starts. A driver starts with no chain in
    ///     flight, so the cursor's two indices must be equal.
    ///   - notifier: Kicks the device; waits for the device's notifications.
    ///   - features: The negotiated features. Transport bits must be ones the ring core implements.
    ///   - pool: The bus addresses of the buffer pool, 16-byte aligned; cut into `bufferSize`
    ///     slots. A slot that does not lie inside one mapping is left unused.
    ///   - bufferSize: Bytes per pool buffer: a multiple of 16, at least 16.
    ///   - indirectThreshold: See ``indirectThreshold``.
    /// - Throws: ``VirtqueueError`` naming the value: a placement or pool outside memory, a
    ///   cursor with chains in flight, a parameter out of range, or an unimplemented feature bit.
    public init(
        memory: consuming Memory,
        placement: QueuePlacement,
        notifier: Notify,
        features: Features,
        pool: Range<UInt64>,
        bufferSize: Int = 4096,
        indirectThreshold: Int = 16
    ) throws(VirtqueueError) {
        guard bufferSize >= 16, bufferSize % 16 == 0, bufferSize <= Int(UInt32.max) else {
            throw VirtqueueError(
                .invalidConfiguration,
                "buffer size \(bufferSize) is not a multiple of 16 between 16 and 2^32"
            )
        }
        guard pool.lowerBound % 16 == 0 else {
            throw VirtqueueError(.invalidConfiguration, "pool \(hexRange(pool)) does not start 16-byte aligned")
        }
        guard indirectThreshold >= 1 else {
            throw VirtqueueError(.invalidConfiguration, "indirect threshold \(indirectThreshold) is below 1")
        }
        guard placement.cursor.nextAvailable == placement.cursor.nextUsed else {
            throw VirtqueueError(
                .invalidPlacement,
                "a driver starts with no chain in flight, but cursor \(placement.cursor) has \(Int(placement.cursor.nextAvailable &- placement.cursor.nextUsed))"
            )
        }
        if let area = placement.bufferArea, !(pool.lowerBound >= area.lowerBound && pool.upperBound <= area.upperBound)
        {
            throw VirtqueueError(
                .invalidConfiguration,
                "pool \(hexRange(pool)) is not inside the buffer area \(hexRange(area))"
            )
        }
        let setup = try QueueSetup(memory: memory, placement: placement, features: features)
        let slotCount = min(Int((pool.upperBound - pool.lowerBound) / UInt64(bufferSize)), Int(UInt32.max - 1))
        var slots: [UnsafeMutableRawPointer?] = []
        slots.reserveCapacity(slotCount)
        for slot in 0..<slotCount {
            let address = pool.lowerBound + UInt64(slot) * UInt64(bufferSize)
            slots.append(setup.buffers.contiguousHost(address, length: UInt64(bufferSize)))
        }
        // The driver translates nothing after this: each slot's address is in its record.
        setup.deallocate()
        guard slotCount == 0 || slots.contains(where: { $0 != nil }) else {
            throw VirtqueueError(
                .invalidConfiguration,
                "no \(bufferSize)-byte slot of pool \(hexRange(pool)) lies inside one mapping of the buffer area"
            )
        }
        self.memory = memory
        self.notifier = notifier
        self.features = features
        self.bufferSize = bufferSize
        self.indirectThreshold = indirectThreshold
        self.indirect = features.contains(.indirectDescriptors)
        self.directLimit =
            features.contains(.indirectDescriptors) ? min(indirectThreshold, setup.ring.size) : setup.ring.size
        self.poolStart = pool.lowerBound
        self.state = .allocate(capacity: 1)
        self.state.initialize(
            to: DriverState(
                ring: setup.ring,
                packed: setup.packed,
                eventIndex: features.contains(.eventIndex),
                cursor: placement.cursor,
                slots: slots,
                pool: pool.lowerBound,
                bufferSize: bufferSize
            )
        )
        self.queueIdentity = makeQueueIdentity()
        if features.contains(.inOrder) { state.pointee.enableInOrder(cursor: placement.cursor) }
    }

    /// Attaches the driver to queue `queueIndex` of one of this package's regions, whose header
    /// has been written (``RegionLayout/initialize(_:)``). The layout comes from
    /// ``GuestMemory/regionLayout`` when the memory knows it (what this process wrote, or
    /// validated once); otherwise the header is read and validated.
    ///
    /// - Parameters:
    ///   - region: Memory holding a region header at bus address 0; the queue owns it from now on.
    ///   - notifier: Kicks the device; waits for the device's notifications.
    ///   - queueIndex: Which of the region's queues to drive.
    ///   - bufferSize: Bytes per pool buffer: a multiple of 16, at least 16. The pool takes the
    ///     whole data area (for a region with several queues, see `poolRange`).
    ///   - poolRange: The part of the data area, relative to its start, this queue's pool uses;
    ///     `nil` for all of it.
    ///   - indirectThreshold: See ``indirectThreshold``.
    /// - Throws: ``VirtqueueError`` if the header is malformed or a parameter is out of range.
    public init(
        region: consuming Memory,
        notifier: Notify,
        queueIndex: Int = 0,
        bufferSize: Int = 4096,
        poolRange: Range<Int>? = nil,
        indirectThreshold: Int = 16
    ) throws(VirtqueueError) {
        let layout = try RegionLayout.of(region)
        let pool = poolRange ?? 0..<layout.dataAreaSize
        guard pool.lowerBound >= 0, pool.upperBound <= layout.dataAreaSize, pool.lowerBound % 16 == 0 else {
            throw VirtqueueError(
                .invalidConfiguration,
                "pool range \(pool) is not a 16-aligned part of the data area 0..<\(layout.dataAreaSize)"
            )
        }
        let start = UInt64(layout.dataAreaOffset)
        try self.init(
            memory: region,
            placement: try layout.placement(ofQueue: queueIndex),
            notifier: notifier,
            features: layout.features,
            pool: start + UInt64(pool.lowerBound)..<start + UInt64(pool.upperBound),
            bufferSize: bufferSize,
            indirectThreshold: indirectThreshold
        )
    }

    deinit {
        state.releaseQueue()
    }

    // MARK: Introspection

    /// The queue size N.
    @inlinable public var queueSize: Int { state.pointee.ring.size }
    /// Descriptors not used by any chain being built or in flight.
    @inlinable public var freeDescriptorCount: Int {
        state.pointee.freeDescriptorCount + state.pointee.inOrder.freeDescriptors
    }
    /// Pool buffers not used by any chain.
    @inlinable public var freeBufferCount: Int { state.pointee.freeBufferCount }
    /// The number of buffers in the pool.
    @inlinable public var bufferCount: Int { state.pointee.bufferCount }
    /// Chains submitted and not yet taken back.
    @inlinable public var inFlightCount: Int { state.pointee.inFlightCount }
    /// The violation that broke the queue, or `nil` while it works.
    @inlinable public var brokenReason: VirtqueueError? { state.pointee.side.broken }
    /// Whether the queue is broken.
    @inlinable public var isBroken: Bool { state.pointee.side.broken != nil }
    /// Where the ring stands: the next available entry the driver will publish and the next
    /// used entry it will take (packed: those positions, each with its wrap counter in bit 15).
    @inlinable public var cursor: QueueCursor {
        QueueCursor(nextAvailable: state.pointee.side.published, nextUsed: state.pointee.side.consumed)
    }
    /// The longest chain this queue can build: the queue size, virtio's limit. A chain that moves
    /// into an indirect table must also fit that table in one buffer (``bufferSize`` / 16 segments).
    @inlinable public var maximumChainLength: Int { state.pointee.ring.size }

    // MARK: Building chains (seed steps 1 and 2)

    /// Starts a new, empty chain (the seed's "create a new ring entry and get a handle back").
    @inlinable
    public func makeChain() -> Chain {
        Chain(queueIdentity: queueIdentity, state: state)
    }

    /// Appends a device-readable segment of `count` bytes, which `fill` writes in place.
    ///
    /// The payload is written once, straight into the shared buffer: zero-copy.
    ///
    /// - Parameters:
    ///   - chain: The chain being built.
    ///   - count: The segment's length; at most ``bufferSize``.
    ///   - fill: Writes the payload. The pointer is valid only inside the closure.
    /// - Throws: ``VirtqueueError`` with ``VirtqueueError/Code-swift.struct/payloadTooLarge``,
    ///   ``VirtqueueError/Code-swift.struct/readableAfterWritable``, ``VirtqueueError/Code-swift.struct/chainTooLong``,
    ///   ``VirtqueueError/Code-swift.struct/poolExhausted`` or ``VirtqueueError/Code-swift.struct/ringFull``;
    ///   ``VirtqueueError/Code-swift.struct/notOwned`` for another queue's chain
    ///   (<doc:TrustModel#A-token-belongs-to-its-queue>); ``VirtqueueError/Code-swift.struct/queueBroken``
    ///   for a chain's first segment once the queue is broken (the check is made once per chain:
    ///   a chain begun before the break is refused by ``submit(_:publish:)``). The chain is unchanged.
    @inlinable @inline(__always)
    public mutating func appendReadable(
        to chain: inout Chain,
        count: Int,
        _ fill: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(VirtqueueError) {
        try checkOwned("chain", of: chain.queueIdentity, passedTo: "appendReadable", on: queueIdentity)
        if chain.head != noBuffer, state.pointee.heads[Int(chain.head)].hasWritable {
            throw .readableAfterWritable(count: count)
        }
        let host = try appendSegment(to: &chain, length: count, writable: false)
        fill(UnsafeMutableRawBufferPointer(start: host, count: count))
    }

    /// Appends a device-readable segment holding a copy of `bytes`.
    ///
    /// - Throws: As ``appendReadable(to:count:_:)``.
    @inlinable
    public mutating func appendReadable(to chain: inout Chain, copying bytes: UnsafeRawBufferPointer)
        throws(VirtqueueError)
    {
        try appendReadable(to: &chain, count: bytes.count) { destination in
            destination.copyMemory(from: bytes)
        }
    }

    /// Appends a device-readable segment holding a copy of `bytes`.
    ///
    /// - Throws: As ``appendReadable(to:count:_:)``.
    @inlinable
    public mutating func appendReadable(to chain: inout Chain, copying bytes: some Sequence<UInt8>)
        throws(VirtqueueError)
    {
        let array = Array(bytes)
        try appendReadable(to: &chain, count: array.count) { destination in
            destination.copyBytes(from: array)
        }
    }

    /// Appends a device-writable segment with room for `capacity` bytes.
    ///
    /// - Parameters:
    ///   - chain: The chain being built.
    ///   - capacity: The room offered to the device; at most ``bufferSize``; `nil` for a whole
    ///     buffer.
    /// - Throws: As ``appendReadable(to:count:_:)``, except for the ordering rule.
    @inlinable @inline(__always)
    public mutating func appendWritable(to chain: inout Chain, capacity: Int? = nil) throws(VirtqueueError) {
        try checkOwned("chain", of: chain.queueIdentity, passedTo: "appendWritable", on: queueIdentity)
        _ = try appendSegment(to: &chain, length: capacity ?? bufferSize, writable: true)
    }

    /// Gives a chain that was never submitted back to the pool.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/notOwned`` if the chain belongs to another queue
    ///   (<doc:TrustModel#A-token-belongs-to-its-queue>); it goes back to its own queue's pool.
    @inlinable
    public mutating func discard(_ chain: consuming Chain) throws(VirtqueueError) {
        try checkOwned("chain", of: chain.queueIdentity, passedTo: "discard", on: queueIdentity)
        releaseUnsubmitted(chain)
    }

    // MARK: Submitting and notifying (seed steps 2 and 3)

    /// Makes a chain available to the device and publishes the new `avail.idx` — or, with
    /// `publish: false`, stages it: the descriptors and the available entry are written, and the
    /// index is published later, once for the whole batch, by ``publish()``,
    /// ``notifyIfNeeded()`` or ``waitForUsed(spins:)``.
    ///
    /// The chain's descriptors are already in the ring: each append wrote its own (and linked the
    /// one before), so submitting writes the available entry and, unless staged, the index — and,
    /// for an indirect chain, the head descriptor that points at its table. The device may read a
    /// descriptor only once the index publishes its head; the driver never reads one back.
    ///
    /// Submitting does not notify the device: submit a batch, then call ``notifyIfNeeded()`` once.
    /// Staging the batch as well means the device's CPU fetches `avail.idx` once per batch instead
    /// of once per chain (docs/performance.md, "Publishing once per batch").
    ///
    /// - Parameters:
    ///   - chain: The chain to submit; consumed.
    ///   - publish: Whether to publish `avail.idx` now (the default) or leave it to the next
    ///     ``publish()``, ``notifyIfNeeded()`` or wait. The device does not see a staged chain
    ///     until then.
    /// - Returns: The chain's id (its head descriptor), which the device reports back.
    /// - Throws: ``VirtqueueError/Code-swift.struct/emptyChain``, ``VirtqueueError/Code-swift.struct/notOwned``
    ///   (<doc:TrustModel#A-token-belongs-to-its-queue>), or ``VirtqueueError/Code-swift.struct/queueBroken``.
    ///   The chain's buffers go back to its own queue's pool on error.
    @inlinable @inline(__always)
    @discardableResult
    public mutating func submit(_ chain: consuming Chain, publish: Bool = true) throws(VirtqueueError) -> UInt16 {
        try checkOwned("chain", of: chain.queueIdentity, passedTo: "submit", on: queueIdentity)
        let head = chain.head
        guard head != noBuffer else { throw .emptyChain() }
        let state = self.state
        if state.pointee.side.diverted {
            if let broken = state.pointee.side.broken {
                releaseUnsubmitted(chain)
                throw .broken(by: broken)
            }
            state.pointee.submitPacked(
                head: UInt16(truncatingIfNeeded: head),
                poolStart: poolStart,
                bufferSize: bufferSize,
                publish: publish
            )
            chain.end()
            return UInt16(truncatingIfNeeded: head)
        }
        // The chain's descriptors are in the ring (or its table) already, written as it was built;
        // the device may read them only once `avail.idx` publishes the head.
        let table = state.pointee.heads[Int(head)].indirectTable
        if table != noBuffer {
            storeIndirectHead(UInt16(truncatingIfNeeded: head), table: table)
        }
        makeAvailable(UInt16(truncatingIfNeeded: head), publish: publish)
        state.pointee.heads[Int(head)].inFlight = true
        chain.end()
        return UInt16(truncatingIfNeeded: head)
    }

    /// Sends a chain of one device-readable segment of `count` bytes, which `fill` writes in
    /// place: ``makeChain()``, ``appendReadable(to:count:_:)`` and ``submit(_:publish:)`` in one
    /// call, for the most common request — one message out (Linux's `virtqueue_add_outbuf` with
    /// one buffer).
    ///
    /// The result is the same as the three calls': the same descriptor, available entry and
    /// index, the same chain in flight, the same errors. On a split ring with a descriptor and a
    /// buffer free it costs fewer instructions, since there is no chain token to build, check and
    /// end between the calls (docs/performance.md, "The driver's one-call send"); a packed ring,
    /// IN_ORDER, a broken queue and every refusal take the three calls' path.
    ///
    /// - Parameters:
    ///   - count: The segment's length; at most ``bufferSize``.
    ///   - publish: Whether to publish `avail.idx` now (the default) or stage the chain for the
    ///     next ``publish()``, ``notifyIfNeeded()`` or wait, as for ``submit(_:publish:)``.
    ///   - fill: Writes the payload. The pointer is valid only inside the closure.
    /// - Returns: The chain's id (its head descriptor), which the device reports back.
    /// - Throws: As ``appendReadable(to:count:_:)``: ``VirtqueueError/Code-swift.struct/payloadTooLarge``,
    ///   ``VirtqueueError/Code-swift.struct/poolExhausted``, ``VirtqueueError/Code-swift.struct/ringFull``
    ///   or ``VirtqueueError/Code-swift.struct/queueBroken``; nothing is sent and `fill` is not
    ///   called.
    @inlinable @inline(__always)
    @discardableResult
    public mutating func send(
        count: Int,
        publish: Bool = true,
        _ fill: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(VirtqueueError) -> UInt16 {
        let state = self.state
        // One test for the usual case: a split ring neither broken nor IN_ORDER (whose free
        // descriptors the hot path does not see), a length that fits, a descriptor and a buffer
        // free (a count of 0 less 1 is negative).
        guard !state.pointee.side.diverted, UInt(bitPattern: count) <= UInt(bitPattern: bufferSize),
            (state.pointee.freeDescriptorCount &- 1) | (state.pointee.freeBufferCount &- 1) >= 0
        else {
            var chain = makeChain()
            try appendReadable(to: &chain, count: count, fill)
            return try submit(chain, publish: publish)
        }
        let (head, host) = takeFirstSegment(length: count, writable: false, inFlight: true)
        fill(UnsafeMutableRawBufferPointer(start: host, count: count))
        makeAvailable(head, publish: publish)
        return head
    }

    /// Writes `head` into the available ring and publishes `avail.idx`, or stages it.
    @inlinable @inline(__always)
    func makeAvailable(_ head: UInt16, publish: Bool) {
        state.pointee.ring.availableEntry(state.pointee.side.published).storeBytes(
            of: head.littleEndian,
            as: UInt16.self
        )
        if publish {
            state.pointee.side.publish()
        } else {
            state.pointee.side.stage()
        }
    }

    /// Publishes `avail.idx` for the chains submitted with `publish: false` since the last
    /// publication; nothing when there are none. ``notifyIfNeeded()`` and ``waitForUsed(spins:)``
    /// do this first on their own.
    @inlinable
    public mutating func publish() {
        state.pointee.side.publishStaged()
    }

    /// Kicks the device if it has asked to be notified of the chains submitted since the last
    /// call (virtio's `USED_F_NO_NOTIFY` flag, or `avail_event` under EVENT_IDX).
    ///
    /// This is the seed's notify callback, called only when needed: a burst of submissions
    /// while the device is awake costs no kick at all.
    ///
    /// - Returns: Whether the notifier was called.
    /// - Throws: ``VirtqueueError`` from the notifier (``VirtqueueError/Code-swift.struct/peerDied``
    ///   when the device has gone, which also breaks the queue), or
    ///   ``VirtqueueError/Code-swift.struct/queueBroken``.
    @inlinable
    @discardableResult
    public mutating func notifyIfNeeded() throws(VirtqueueError) -> Bool {
        try state.pointee.side.notifyIfNeeded(notifier)
    }

    // MARK: Taking chains back (seed step 8)

    /// Takes the next chain the device has returned, or `nil` if there is none yet.
    ///
    /// The used element is read once and validated: `used.idx` may not move more than the
    /// queue size, the id must name a chain in flight, and the length may not exceed the
    /// chain's writable bytes. A violation breaks the queue.
    ///
    /// - Throws: ``VirtqueueError`` naming the violation; afterwards
    ///   ``VirtqueueError/Code-swift.struct/queueBroken``. Take the chains still in flight
    ///   back with ``takeAbandoned()``.
    @inlinable @inline(__always)
    public mutating func takeUsed() throws(VirtqueueError) -> UsedChain? {
        let state = self.state
        if state.pointee.side.diverted {
            try state.pointee.side.checkUsable()
            guard let (head, written, record) = try state.pointee.takePackedUsedEntry() else { return nil }
            return UsedChain(completed: head, written: written, record, queueIdentity: queueIdentity, state: state)
        }
        guard let position = try state.pointee.side.nextPeerEntry() else { return nil }
        let element = UnsafeRawPointer(state.pointee.ring.usedElement(position))
        let id = UInt32(littleEndian: element.loadUnaligned(as: UInt32.self))
        let length = UInt32(littleEndian: element.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        guard id < state.pointee.usedIDLimit else {
            let taken = try DriverState.takeUsedOffTheUsualPath(state, id: id, length: length, position: position)
            return UsedChain(
                id: taken.head,
                writtenByteCount: taken.written,
                status: .completed,
                firstBuffer: taken.record.firstBuffer,
                lastBuffer: taken.record.lastBuffer,
                segmentCount: Int(taken.record.segmentCount),
                queueIdentity: queueIdentity,
                state: state
            )
        }
        let head = UInt16(truncatingIfNeeded: id)
        let record = state.pointee.heads[Int(head)]
        guard record.inFlight else { throw state.pointee.side.breakQueue(.usedIDNotInFlight(id)) }
        guard UInt64(length) <= record.writableByteCount else {
            throw state.pointee.side.breakQueue(
                .usedLengthTooLarge(length, head: head, writable: record.writableByteCount)
            )
        }
        state.pointee.side.consumed = position &+ 1
        // ``DriverState/retire(_:_:)`` with the record's store first: a store into
        // `descriptorNext` could alias `heads` as far as the compiler knows, which would then be
        // loaded again.
        state.pointee.heads[Int(head)].inFlight = false
        state.pointee.releaseDescriptors(head: head, record)
        return UsedChain(completed: head, written: length, record, queueIdentity: queueIdentity, state: state)
    }

    /// After the queue broke, takes back one chain that was still in flight, marked
    /// ``UsedChain/Status-swift.enum/abandoned(_:)``; `nil` when none is left (or the queue is not broken).
    ///
    /// Together with ``takeUsed()`` this accounts for every buffer the driver ever submitted.
    @inlinable
    public mutating func takeAbandoned() -> UsedChain? {
        guard let broken = state.pointee.side.broken, state.pointee.inFlightCount > 0 else { return nil }
        let cause = broken.code
        while state.pointee.abandonCursor < state.pointee.ring.size {
            let head = state.pointee.abandonCursor
            state.pointee.abandonCursor += 1
            let record = state.pointee.heads[head]
            guard record.inFlight else { continue }
            state.pointee.retire(UInt16(truncatingIfNeeded: head), record)
            state.pointee.abandonedCount &+= 1
            return UsedChain(
                id: UInt16(truncatingIfNeeded: head),
                writtenByteCount: 0,
                status: .abandoned(cause),
                firstBuffer: record.firstBuffer,
                lastBuffer: record.lastBuffer,
                segmentCount: Int(record.segmentCount),
                queueIdentity: queueIdentity,
                state: state
            )
        }
        return nil
    }

    /// Calls `body` with each segment of a returned chain, in order: device-readable segments
    /// with the bytes the driver wrote, device-writable ones with the prefix the device wrote
    /// (by the chain's ``UsedChain/writtenByteCount``).
    ///
    /// The seed's `virtqueue_gather_used`, without the copy.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/notOwned`` if `used` is another queue's,
    ///   before `body` is called (<doc:TrustModel#A-token-belongs-to-its-queue>); otherwise
    ///   whatever `body` throws, unchanged.
    @inlinable @inline(__always)
    public func forEachSegment<E: Error>(
        of used: borrowing UsedChain,
        _ body: (_ isDeviceWritable: Bool, _ bytes: UnsafeRawBufferPointer) throws(E) -> Void
    ) throws {
        try checkOwned("used chain", of: used.queueIdentity, passedTo: "forEachSegment", on: queueIdentity)
        try forEachOwnedSegment(of: used, body)
    }

    /// Copies the bytes the device wrote into `destination`, in segment order.
    ///
    /// - Returns: The number of bytes copied: the smaller of ``UsedChain/writtenByteCount`` and
    ///   `destination.count`.
    /// - Throws: ``VirtqueueError/Code-swift.struct/notOwned`` if `used` is another queue's
    ///   (<doc:TrustModel#A-token-belongs-to-its-queue>); nothing is copied.
    @inlinable
    public func copyWrittenBytes(
        of used: borrowing UsedChain,
        into destination: UnsafeMutableRawBufferPointer
    ) throws(VirtqueueError) -> Int {
        try checkOwned("used chain", of: used.queueIdentity, passedTo: "copyWrittenBytes", on: queueIdentity)
        var copied = 0
        forEachOwnedSegment(of: used) { isWritable, bytes in
            guard isWritable, copied < destination.count else { return }
            let count = min(bytes.count, destination.count - copied)
            UnsafeMutableRawBufferPointer(rebasing: destination[copied..<copied + count])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<count]))
            copied += count
        }
        return copied
    }

    /// Calls `body` with each segment of `used`, as ``forEachSegment(of:_:)`` describes. The
    /// caller has checked that `used` is this queue's (``checkOwned(_:of:passedTo:on:)``).
    @inlinable @inline(__always)
    func forEachOwnedSegment<E: Error>(
        of used: borrowing UsedChain,
        _ body: (_ isDeviceWritable: Bool, _ bytes: UnsafeRawBufferPointer) throws(E) -> Void
    ) throws(E) {
        var remaining = used.writtenByteCount
        var buffer = used.firstBuffer
        let buffers = state.pointee.buffers
        for _ in 0..<used.segmentCount {
            let record = buffers[Int(buffer)]
            let start = UnsafeRawPointer(record.host)
            if record.flags & BufferRecord.writableFlag != 0 {
                let written = min(remaining, Int(record.length))
                remaining &-= written  // written ≤ remaining
                try body(true, UnsafeRawBufferPointer(start: start, count: written))
            } else {
                try body(false, UnsafeRawBufferPointer(start: start, count: Int(record.length)))
            }
            buffer = record.next
        }
    }

    /// Returns a chain's buffers to the pool (the seed's "iterate through the buffers to free them").
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/notOwned`` if the chain came from another queue
    ///   (<doc:TrustModel#A-token-belongs-to-its-queue>); its buffers are not freed.
    @inlinable @inline(__always)
    public mutating func free(_ used: consuming UsedChain) throws(VirtqueueError) {
        try checkOwned("used chain", of: used.queueIdentity, passedTo: "free", on: queueIdentity)
        state.pointee.releaseBuffers(first: used.firstBuffer, last: used.lastBuffer, count: used.segmentCount)
        used.end()
    }

    /// Blocks until the device has returned at least one chain (or returns at once if none is
    /// in flight).
    ///
    /// Spins `spins` times reading `used.idx`, then asks the device for a notification
    /// (clearing `VIRTQ_AVAIL_F_NO_INTERRUPT`, or setting `used_event` under EVENT_IDX),
    /// re-checks, and sleeps on the notifier.
    ///
    /// - Throws: ``VirtqueueError`` from the notifier (for example ``VirtqueueError/Code-swift.struct/peerDied``,
    ///   which also breaks the queue) or ``VirtqueueError/Code-swift.struct/queueBroken``.
    @inlinable
    public mutating func waitForUsed(spins: Int = 256) throws(VirtqueueError) {
        try state.pointee.side.checkUsable()
        guard state.pointee.inFlightCount > 0 else { return }
        try state.pointee.side.waitForPeer(spins: spins, notifier: notifier)
    }

    /// Breaks the queue on purpose — for example when a supervisor learns that the device
    /// process died. Chains in flight can then be taken back with ``takeAbandoned()``.
    @inlinable
    public mutating func markBroken(_ reason: VirtqueueError) {
        _ = state.pointee.side.breakQueue(reason)
    }

    // MARK: Internals

    /// The descriptor that offers pool buffer `buffer` (described by `record`), chained to
    /// `next` unless it is the chain's last.
    @inlinable @inline(__always)
    func descriptor(_ buffer: UInt32, _ record: BufferRecord, next: UInt16?) -> Descriptor {
        Descriptor(
            address: record.address,
            length: record.length,
            flags: (record.flags & BufferRecord.writableFlag != 0 ? Descriptor.writeFlag : 0)
                | (next == nil ? 0 : Descriptor.nextFlag),
            next: next ?? 0
        )
    }

    /// Chains the descriptor at `pointer` (written with no successor) to `next`: its flags and
    /// next field, written in one store. `writable` is the flag it was written with.
    @inlinable @inline(__always)
    static func link(_ pointer: UnsafeMutableRawPointer, writable: Bool, to next: UInt16) {
        let flags = (writable ? Descriptor.writeFlag : 0) | Descriptor.nextFlag
        pointer.storeBytes(of: (UInt32(flags) | UInt32(next) &<< 16).littleEndian, toByteOffset: 12, as: UInt32.self)
    }

    /// Writes the ring's head descriptor of an indirect chain: it points at the chain's table.
    @inlinable
    func storeIndirectHead(_ head: UInt16, table: UInt32) {
        let count = state.pointee.heads[Int(head)].segmentCount
        Descriptor(
            address: poolStart &+ UInt64(table) &* UInt64(truncatingIfNeeded: bufferSize),
            length: count &* UInt32(Descriptor.byteCount),
            flags: Descriptor.indirectFlag,
            next: 0
        ).store(to: state.pointee.ring.descriptor(head))
    }

    /// Takes a buffer (and, for a direct chain, a descriptor), links it to the chain and writes
    /// its descriptor — into the ring's table for a direct chain, the chain's table buffer for an
    /// indirect one. The device cannot look at a descriptor before `submit` publishes its head,
    /// and the driver never reads one back: what it needs later is in its private records. The
    /// caller has checked that `chain` is this queue's (``checkOwned(_:of:passedTo:on:)``).
    ///
    /// - Returns: The buffer's bytes in this process.
    @inlinable @inline(__always)
    mutating func appendSegment(
        to chain: inout Chain,
        length: Int,
        writable: Bool
    ) throws(VirtqueueError) -> UnsafeMutableRawPointer? {
        let state = self.state
        // A broken queue refuses a chain's first segment. A chain begun before the queue broke
        // may grow, and is refused (its buffers given back) when it is submitted: once per chain.
        if chain.head == noBuffer { try state.pointee.side.checkUsable() }
        // One unsigned comparison: a negative length is a huge one.
        guard UInt(bitPattern: length) <= UInt(bitPattern: bufferSize) else {
            throw .payloadTooLarge(length, bufferSize: bufferSize)
        }
        guard chain.head != noBuffer else {
            // The chain's first segment: its descriptor becomes the head, which names its record.
            if state.pointee.freeDescriptorCount == 0 { try DriverState.lendInOrderDescriptor(state) }
            guard state.pointee.freeBufferCount > 0 else {
                throw .poolExhausted(bufferCount: state.pointee.bufferCount)
            }
            let (head, host) = takeFirstSegment(length: length, writable: writable, inFlight: false)
            chain.head = UInt32(head)
            return host
        }
        return try appendFurtherSegment(to: chain.head, length: length, writable: writable)
    }

    /// Takes the free descriptor and the free buffer at the heads of their lists for a chain's
    /// first segment of `length` bytes, writes the descriptor (no successor) and the head's
    /// record. The caller has checked that both are free and that `length` fits a buffer.
    ///
    /// - Parameter inFlight: Whether the record says the chain is in flight already (for
    ///   ``send(count:publish:_:)``, which makes it available in the same call).
    /// - Returns: The head descriptor, and the buffer's bytes in this process.
    @inlinable @inline(__always)
    func takeFirstSegment(length: Int, writable: Bool, inFlight: Bool) -> (UInt16, UnsafeMutableRawPointer?) {
        let state = self.state
        // Every load first, then the stores: a store through any of these pointers may alias
        // the others as far as the compiler knows, and a load after it would be done again.
        // (Not in appendDirectSegment: there the extra live values cost spills in a caller
        // that appends several segments.)
        let buffers = state.pointee.buffers
        let descriptorNext = state.pointee.descriptorNext
        let table = state.pointee.ring.descriptors
        let heads = state.pointee.heads
        let buffer = state.pointee.freeBufferHead
        let head = state.pointee.freeDescriptorHead
        let freeBuffers = state.pointee.freeBufferCount
        let freeDescriptors = state.pointee.freeDescriptorCount
        let taken = buffers.advanced(by: Int(buffer))
        let nextFreeBuffer = taken.pointee.next
        let host = taken.pointee.host
        let address = taken.pointee.address
        let nextFreeDescriptor = descriptorNext[Int(head)]
        let bytes = UInt32(truncatingIfNeeded: length)

        state.pointee.freeBufferHead = nextFreeBuffer
        state.pointee.freeBufferCount = freeBuffers &- 1
        state.pointee.freeDescriptorHead = nextFreeDescriptor
        state.pointee.freeDescriptorCount = freeDescriptors &- 1
        // The buffer keeps its free-list link as `next`: nothing reads a chain's last link.
        taken.pointee.length = bytes
        taken.pointee.flags = writable ? BufferRecord.writableFlag : 0
        Descriptor(address: address, length: bytes, flags: writable ? Descriptor.writeFlag : 0, next: 0)
            .store(to: table + Int(head) &* Descriptor.byteCount)
        heads[Int(head)] = HeadRecord(
            head: head,
            buffer: buffer,
            writableByteCount: writable ? UInt64(truncatingIfNeeded: length) : 0,
            hasWritable: writable,
            inFlight: inFlight
        )
        return (head, host)
    }

    /// Appends a segment after the first: the rest of ``appendSegment(to:length:writable:)``.
    /// The usual case — a direct chain that stays direct, with a descriptor and a buffer free — is
    /// decided with one test per condition and inlined; everything else (the chain too long, a
    /// move into an indirect table, an indirect chain, a refusal) is out of line.
    @inlinable @inline(__always)
    mutating func appendFurtherSegment(
        to head: UInt32,
        length: Int,
        writable: Bool
    ) throws(VirtqueueError) -> UnsafeMutableRawPointer? {
        let state = self.state
        let chain = state.pointee.heads.advanced(by: Int(head))
        // A free descriptor and a free buffer in one test (a count of 0 less 1 is negative).
        guard chain.pointee.indirectTable == noBuffer, Int(chain.pointee.segmentCount) < directLimit,
            (state.pointee.freeDescriptorCount &- 1) | (state.pointee.freeBufferCount &- 1) >= 0
        else {
            return try appendOtherSegment(to: head, length: length, writable: writable)
        }
        return appendDirectSegment(to: chain, length: length, writable: writable)
    }

    /// Appends a segment to a direct chain that has one or more: its descriptor goes into the
    /// ring's table, linked as the private list links it. The caller has checked that a
    /// descriptor and a buffer are free and that the chain stays direct.
    @inlinable @inline(__always)
    mutating func appendDirectSegment(
        to chain: UnsafeMutablePointer<HeadRecord>,
        length: Int,
        writable: Bool
    ) -> UnsafeMutableRawPointer? {
        let state = self.state
        let buffer = state.pointee.popBuffer()
        let record = takeBuffer(buffer, after: chain, length: length, writable: writable)
        let next = state.pointee.popDescriptor()
        let previous = chain.pointee.lastDescriptor
        state.pointee.descriptorNext[Int(previous)] = next
        let ring = state.pointee.ring
        descriptor(buffer, record, next: nil).store(to: ring.descriptor(next))
        Self.link(ring.descriptor(previous), writable: chain.pointee.hasWritable, to: next)
        chain.pointee.lastDescriptor = next
        grow(chain, to: buffer, length: length, writable: writable)
        return record.host
    }

    /// Writes the record of pool buffer `buffer`, taken for a segment of `length` bytes, and links
    /// it after the chain's last buffer.
    @inlinable @inline(__always)
    func takeBuffer(
        _ buffer: UInt32,
        after chain: UnsafeMutablePointer<HeadRecord>,
        length: Int,
        writable: Bool
    ) -> BufferRecord {
        let record = takeBuffer(buffer, length: length, writable: writable)
        state.pointee.buffers[Int(chain.pointee.lastBuffer)].next = buffer
        return record
    }

    /// Records a segment of `length` bytes in the pool buffer just taken, and returns its record.
    /// The buffer's `next` keeps its free-list link: nothing reads the link after a chain's last
    /// buffer (walks are bounded by the chain's count), and an append that follows sets it.
    @inlinable @inline(__always)
    func takeBuffer(_ buffer: UInt32, length: Int, writable: Bool) -> BufferRecord {
        let record = state.pointee.buffers.advanced(by: Int(buffer))
        record.pointee.length = UInt32(truncatingIfNeeded: length)
        record.pointee.flags = writable ? BufferRecord.writableFlag : 0
        return record.pointee
    }

    /// Counts a segment of `length` bytes on `buffer` into the chain's record.
    @inlinable @inline(__always)
    func grow(_ chain: UnsafeMutablePointer<HeadRecord>, to buffer: UInt32, length: Int, writable: Bool) {
        chain.pointee.lastBuffer = buffer
        chain.pointee.segmentCount &+= 1
        if writable {
            chain.pointee.writableByteCount &+= UInt64(truncatingIfNeeded: length)
            chain.pointee.hasWritable = true
        }
    }

    /// Every append after the first that is not the usual one: checks the chain's length, moves
    /// the chain into an indirect table when it reaches ``indirectThreshold`` or descriptors run
    /// out (VIRTIO_F_INDIRECT_DESC), appends to an indirect chain (the descriptor goes into the
    /// table buffer, linked by position), or refuses with the error that applies.
    @inlinable @inline(never)
    mutating func appendOtherSegment(
        to head: UInt32,
        length: Int,
        writable: Bool
    ) throws(VirtqueueError) -> UnsafeMutableRawPointer? {
        let state = self.state
        // Under IN_ORDER the free descriptors are hidden from the hot path, which sends every
        // append here: the chain being built (the only one) takes them in ring order.
        let inOrder = state.pointee.inOrder.enabled
        if inOrder { state.pointee.revealDescriptors() }
        defer { if inOrder { state.pointee.hideDescriptors() } }
        let chain = state.pointee.heads.advanced(by: Int(head))
        let count = Int(chain.pointee.segmentCount)
        guard count < maximumChainLength else { throw .chainTooLong(segments: count + 1, limit: maximumChainLength) }
        if chain.pointee.indirectTable == noBuffer && indirect
            && (count >= indirectThreshold || state.pointee.freeDescriptorCount == 0)
        {
            try convertToIndirect(head: UInt16(truncatingIfNeeded: head))
        }
        let table = chain.pointee.indirectTable
        if table != noBuffer {
            guard (count + 1) * Descriptor.byteCount <= bufferSize else {
                throw .indirectTableTooSmall(segments: count + 1, bufferSize: bufferSize)
            }
        } else {
            guard state.pointee.freeDescriptorCount > 0 else { throw .ringFull(size: state.pointee.ring.size) }
        }
        guard state.pointee.freeBufferCount > 0 else {
            throw .poolExhausted(bufferCount: state.pointee.bufferCount)
        }
        guard table != noBuffer else { return appendDirectSegment(to: chain, length: length, writable: writable) }
        let buffer = state.pointee.popBuffer()
        let record = takeBuffer(buffer, after: chain, length: length, writable: writable)
        let entries = state.pointee.buffers[Int(table)].host.unsafelyUnwrapped
        descriptor(buffer, record, next: nil).store(to: entries + count &* Descriptor.byteCount)
        Self.link(
            entries + (count &- 1) &* Descriptor.byteCount,
            writable: chain.pointee.hasWritable,
            to: UInt16(truncatingIfNeeded: count)
        )
        grow(chain, to: buffer, length: length, writable: writable)
        return record.host
    }

    /// Moves a chain that is still private onto an indirect table: its first descriptor stays the
    /// head, the others go back to the free list, a pool buffer holds the table, and the
    /// segments so far are written into it.
    @inlinable
    mutating func convertToIndirect(head: UInt16) throws(VirtqueueError) {
        let record = state.pointee.heads[Int(head)]
        let count = Int(record.segmentCount)
        guard (count + 1) * Descriptor.byteCount <= bufferSize else { return }
        guard state.pointee.freeBufferCount > 0 else {
            throw .poolExhausted(bufferCount: state.pointee.bufferCount)
        }
        let table = state.pointee.popBuffer()
        state.pointee.heads[Int(head)].indirectTable = table
        // The descriptors after the head go back to the free list; what their appends wrote into
        // the ring's table is cleared, so a free descriptor holds nothing of an unpublished chain.
        let ring = state.pointee.ring
        var descriptor = state.pointee.descriptorNext[Int(head)]
        for _ in 1..<count {
            let next = state.pointee.descriptorNext[Int(descriptor)]
            ring.descriptor(descriptor).initializeMemory(as: UInt8.self, repeating: 0, count: Descriptor.byteCount)
            state.pointee.pushDescriptor(descriptor)
            descriptor = next
        }
        if state.pointee.inOrder.enabled { state.pointee.restoreRingOrder(after: head, freed: count - 1) }
        let entries = state.pointee.buffers[Int(table)].host.unsafelyUnwrapped
        var buffer = record.firstBuffer
        for index in 0..<count {
            let segment = state.pointee.buffers[Int(buffer)]
            self.descriptor(buffer, segment, next: index == count &- 1 ? nil : UInt16(truncatingIfNeeded: index &+ 1))
                .store(to: entries + index &* Descriptor.byteCount)
            buffer = segment.next
        }
    }

    /// Gives a chain of this queue that was never submitted back to the free lists, and ends it.
    @inlinable
    func releaseUnsubmitted(_ chain: consuming Chain) {
        state.pointee.releaseUnsubmitted(head: chain.head)
        chain.end()
    }
}

extension DriverQueue: @unchecked Sendable where Memory: Sendable & ~Copyable {}
