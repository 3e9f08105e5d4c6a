/// The driver's end of a split virtqueue: it offers buffers to the device and takes them back.
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
        self.poolStart = pool.lowerBound
        self.state = .allocate(capacity: 1)
        self.state.initialize(
            to: DriverState(
                ring: setup.ring,
                eventIndex: features.contains(.eventIndex),
                cursor: placement.cursor,
                slots: slots
            )
        )
        self.queueIdentity = makeQueueIdentity()
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
    @inlinable public var freeDescriptorCount: Int { state.pointee.freeDescriptorCount }
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
    /// used entry it will take.
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
    ///   (<doc:TrustModel#A-token-belongs-to-its-queue>). The chain is unchanged.
    @inlinable @inline(__always)
    public mutating func appendReadable(
        to chain: inout Chain,
        count: Int,
        _ fill: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(VirtqueueError) {
        try checkOwned("chain", of: chain.queueIdentity, passedTo: "appendReadable", on: queueIdentity)
        guard !chain.hasWritable else { throw .readableAfterWritable(count: count) }
        let buffer = try appendSegment(to: &chain, length: count, writable: false)
        fill(UnsafeMutableRawBufferPointer(start: state.pointee.buffers[Int(buffer)].host, count: count))
        chain._readableByteCount &+= count
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
        let length = capacity ?? bufferSize
        _ = try appendSegment(to: &chain, length: length, writable: true)
        chain._writableByteCount &+= length
        chain.hasWritable = true
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
        guard chain._segmentCount > 0 else { throw .emptyChain() }
        if let broken = state.pointee.side.broken {
            releaseUnsubmitted(chain)
            throw .broken(by: broken)
        }
        let buffers = state.pointee.buffers
        let head = buffers[Int(chain.firstBuffer)].descriptor
        let ring = state.pointee.ring
        let bufferSize = UInt64(self.bufferSize)
        var buffer = chain.firstBuffer
        let last = chain._segmentCount &- 1
        if chain.indirectTable != noBuffer {
            // The chain's descriptors go into its table buffer, linked by position; the ring's
            // head descriptor points at the table.
            let table = buffers[Int(chain.indirectTable)].host.unsafelyUnwrapped
            for index in 0..<chain._segmentCount {
                let record = buffers[Int(buffer)]
                descriptor(buffer, record, next: index == last ? nil : UInt16(truncatingIfNeeded: index &+ 1))
                    .store(to: table + index &* Descriptor.byteCount)
                buffer = record.next
            }
            Descriptor(
                address: poolStart &+ UInt64(chain.indirectTable) &* bufferSize,
                length: UInt32(chain._segmentCount * Descriptor.byteCount),
                flags: Descriptor.indirectFlag,
                next: 0
            ).store(to: ring.descriptor(head))
        } else {
            // The chain's descriptors go into the ring's table, linked as the private list links them.
            for index in 0..<chain._segmentCount {
                let record = buffers[Int(buffer)]
                descriptor(
                    buffer,
                    record,
                    next: index == last ? nil : state.pointee.descriptorNext[Int(record.descriptor)]
                )
                .store(to: ring.descriptor(record.descriptor))
                buffer = record.next
            }
        }
        ring.availableEntry(state.pointee.side.published).storeBytes(of: head.littleEndian, as: UInt16.self)
        if publish {
            state.pointee.side.publish()
        } else {
            state.pointee.side.stage()
        }
        state.pointee.heads[Int(head)] = HeadRecord(
            firstBuffer: chain.firstBuffer,
            lastBuffer: chain.lastBuffer,
            segmentCount: UInt32(chain._segmentCount),
            writableByteCount: UInt64(chain._writableByteCount),
            indirectTable: chain.indirectTable,
            inFlight: true
        )
        state.pointee.inFlightCount &+= 1
        chain.end()
        return head
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
        try state.pointee.side.checkUsable()
        guard try state.pointee.side.peerHasEntry() else { return nil }
        let position = state.pointee.side.consumed
        let element = UnsafeRawPointer(state.pointee.ring.usedElement(position))
        let id = UInt32(littleEndian: element.loadUnaligned(as: UInt32.self))
        let length = UInt32(littleEndian: element.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        let size = state.pointee.ring.size
        guard id < UInt32(size) else { throw state.pointee.side.breakQueue(.usedIDOutOfRange(id, size: size)) }
        let head = UInt16(truncatingIfNeeded: id)
        let record = state.pointee.heads[Int(head)]
        guard record.inFlight else { throw state.pointee.side.breakQueue(.usedIDNotInFlight(id)) }
        guard UInt64(length) <= record.writableByteCount else {
            throw state.pointee.side.breakQueue(
                .usedLengthTooLarge(length, head: head, writable: record.writableByteCount)
            )
        }
        state.pointee.side.consumed = position &+ 1
        state.pointee.retire(head)
        return UsedChain(
            id: head,
            writtenByteCount: Int(length),
            status: .completed,
            firstBuffer: record.firstBuffer,
            lastBuffer: record.lastBuffer,
            segmentCount: Int(record.segmentCount),
            queueIdentity: queueIdentity,
            state: state
        )
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
            state.pointee.retire(UInt16(truncatingIfNeeded: head))
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
                remaining -= written
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
            address: poolStart &+ UInt64(buffer) &* UInt64(bufferSize),
            length: record.length,
            flags: (record.flags & BufferRecord.writableFlag != 0 ? Descriptor.writeFlag : 0)
                | (next == nil ? 0 : Descriptor.nextFlag),
            next: next ?? 0
        )
    }

    /// Takes a buffer (and, for a direct chain, a descriptor) and links it to the chain. The caller
    /// has checked that `chain` is this queue's (``checkOwned(_:of:passedTo:on:)``).
    @inlinable @inline(__always)
    mutating func appendSegment(to chain: inout Chain, length: Int, writable: Bool) throws(VirtqueueError) -> UInt32 {
        try state.pointee.side.checkUsable()
        guard length >= 0, length <= bufferSize else { throw .payloadTooLarge(length, bufferSize: bufferSize) }
        guard chain._segmentCount < maximumChainLength else {
            throw .chainTooLong(segments: chain._segmentCount + 1, limit: maximumChainLength)
        }
        if !chain.isIndirect && chain._segmentCount > 0 && indirect
            && (chain._segmentCount >= indirectThreshold || state.pointee.freeDescriptorCount == 0)
        {
            try convertToIndirect(&chain)
        }
        if chain.isIndirect {
            guard (chain._segmentCount + 1) * Descriptor.byteCount <= bufferSize else {
                throw .indirectTableTooSmall(segments: chain._segmentCount + 1, bufferSize: bufferSize)
            }
        } else {
            guard state.pointee.freeDescriptorCount > 0 else { throw .ringFull(size: state.pointee.ring.size) }
        }
        guard state.pointee.freeBufferCount > 0 else {
            throw .poolExhausted(bufferCount: state.pointee.bufferCount)
        }
        let buffer = state.pointee.popBuffer()
        if !chain.isIndirect || chain._segmentCount == 0 {
            let descriptor = state.pointee.popDescriptor()
            state.pointee.buffers[Int(buffer)].descriptor = descriptor
            if chain._segmentCount > 0 {
                // Link the direct chain in the private descriptor list, as it will be on the ring.
                state.pointee.descriptorNext[Int(state.pointee.buffers[Int(chain.lastBuffer)].descriptor)] = descriptor
            }
        }
        state.pointee.buffers[Int(buffer)].length = UInt32(length)
        state.pointee.buffers[Int(buffer)].flags = writable ? BufferRecord.writableFlag : 0
        if chain.lastBuffer == noBuffer {
            chain.firstBuffer = buffer
        } else {
            state.pointee.buffers[Int(chain.lastBuffer)].next = buffer
        }
        chain.lastBuffer = buffer
        chain._segmentCount &+= 1
        return buffer
    }

    /// Moves a chain that is still private onto an indirect table: its first descriptor becomes
    /// the head, the others go back to the free list, and a pool buffer will hold the table.
    @inlinable
    mutating func convertToIndirect(_ chain: inout Chain) throws(VirtqueueError) {
        guard (chain._segmentCount + 1) * Descriptor.byteCount <= bufferSize else { return }
        guard state.pointee.freeBufferCount > 0 else {
            throw .poolExhausted(bufferCount: state.pointee.bufferCount)
        }
        chain.indirectTable = state.pointee.popBuffer()
        var buffer = state.pointee.buffers[Int(chain.firstBuffer)].next
        for _ in 1..<chain._segmentCount {
            state.pointee.pushDescriptor(state.pointee.buffers[Int(buffer)].descriptor)
            buffer = state.pointee.buffers[Int(buffer)].next
        }
    }

    /// Gives a chain of this queue that was never submitted back to the free lists, and ends it.
    @inlinable
    func releaseUnsubmitted(_ chain: consuming Chain) {
        state.pointee.releaseUnsubmitted(
            firstBuffer: chain.firstBuffer,
            lastBuffer: chain.lastBuffer,
            segmentCount: chain._segmentCount,
            indirectTable: chain.indirectTable
        )
        chain.end()
    }
}

extension DriverQueue: @unchecked Sendable where Memory: Sendable & ~Copyable {}
