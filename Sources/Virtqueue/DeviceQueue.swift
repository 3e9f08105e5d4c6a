/// A request the device has taken from the available ring: one validated descriptor chain.
///
/// The request is `~Copyable`: the device completes it exactly once, with
/// ``DeviceQueue/complete(_:written:)``, and the compiler enforces that. Its segments are
/// zero-copy views into the region, reached through ``DeviceQueue/forEachReadable(in:_:)`` and
/// ``DeviceQueue/forEachWritable(in:_:)``.
public struct DeviceRequest: ~Copyable {
    /// The chain's id: its head descriptor index. The device echoes it in the used ring.
    public let id: UInt16
    /// Bytes in the device-readable segments.
    public let readableByteCount: Int
    /// Bytes of room in the device-writable segments.
    public let writableByteCount: Int
    /// The number of segments.
    public let segmentCount: Int
    @usableFromInline let firstSegment: UInt32
    @usableFromInline let lastSegment: UInt32
    @usableFromInline let queueIdentity: UInt32

    @inlinable
    init(id: UInt16, chain: ParsedChain, queueIdentity: UInt32) {
        self.id = id
        self.readableByteCount = chain.readableByteCount
        self.writableByteCount = chain.writableByteCount
        self.segmentCount = chain.count
        self.firstSegment = chain.first
        self.lastSegment = chain.last
        self.queueIdentity = queueIdentity
    }

    /// All bytes of the chain, readable and writable: the seed's `virtqueue_scattered_available_size`.
    @inlinable public var totalByteCount: Int { readableByteCount + writableByteCount }
}

/// The device's end of a split virtqueue: it takes chains the driver made available, reads and
/// writes their buffers in place, and returns them through the used ring.
///
/// This is the seL4 libvirtqueue device (`virtqueue_device_t`) rebuilt to virtio 1.x. Every
/// chain is parsed once, by one validating parser, into private memory before any of it is
/// used; a malformed chain breaks the queue with a typed error. The seed's steps 4 to 7:
///
/// ```swift
/// try device.waitForRequests()
/// while let request = try device.nextRequest() {          // 4. get the available entry
///     device.forEachReadable(in: request) { bytes in … }   // 5. gather its buffers
///     let written = device.scatter(reply, into: request)
///     try device.complete(request, written: written)       // 6. move it to the used ring
/// }
/// try device.notifyIfNeeded()                              // 7. notify the driver
/// ```
public struct DeviceQueue<Region: MemoryRegion & ~Copyable, Notify: Notifier>: ~Copyable {
    @usableFromInline let region: Region
    /// The notifier this queue notifies the driver through and waits on for requests.
    public let notifier: Notify
    /// The features negotiated for this region.
    public let features: Features
    @usableFromInline let ring: RingGeometry
    @usableFromInline let endpoint: Endpoint
    @usableFromInline let state: UnsafeMutablePointer<DeviceState>
    @usableFromInline let queueIdentity: UInt32
    @usableFromInline let indirect: Bool

    /// Attaches the device to queue `queueIndex` of a region, reading and validating its header.
    ///
    /// - Parameters:
    ///   - region: The region; the queue owns it from now on.
    ///   - notifier: Notifies the driver; waits for the driver's kicks.
    ///   - queueIndex: Which of the region's queues to serve.
    ///   - supportedFeatures: The features this device implements. A region whose negotiated
    ///     features include anything else is refused.
    ///   - segmentCapacity: How many segments the device can hold across all requests it has
    ///     taken and not completed; `nil` for four times the queue size.
    /// - Throws: ``VirtqueueError`` if the header is malformed or asks for unsupported features.
    public init(
        region: consuming Region,
        notifier: Notify,
        queueIndex: Int = 0,
        supportedFeatures: Features = .all,
        segmentCapacity: Int? = nil
    ) throws(VirtqueueError) {
        let layout = try RegionLayout(reading: region)
        guard layout.queues.indices.contains(queueIndex) else {
            throw VirtqueueError(
                .noSuchQueue,
                "queue index \(queueIndex) is not below the region's \(layout.queues.count) queues"
            )
        }
        let unsupported = layout.features.subtracting(supportedFeatures.union(.version1))
        guard unsupported.isEmpty else {
            throw VirtqueueError(
                .featureNotSupported,
                "the region negotiated \(unsupported), which this device does not support"
            )
        }
        let queue = layout.queues[queueIndex]
        let capacity = segmentCapacity ?? 4 * queue.size
        guard capacity >= queue.size, capacity < Int(UInt32.max) else {
            throw VirtqueueError(
                .invalidConfiguration,
                "segment capacity \(capacity) is below the queue size \(queue.size) or too large"
            )
        }
        let ring = RingGeometry(layout: layout, queue: queue)
        self.region = region
        self.notifier = notifier
        self.features = layout.features
        self.ring = ring
        self.endpoint = .device(ring, eventIndex: layout.features.contains(.eventIndex))
        self.indirect = layout.features.contains(.indirectDescriptors)
        self.state = .allocate(capacity: 1)
        self.state.initialize(to: DeviceState(ring: ring, segmentCapacity: capacity))
        self.queueIdentity = makeQueueIdentity()
    }

    deinit {
        state.pointee.deallocate()
        state.deinitialize(count: 1)
        state.deallocate()
    }

    /// The queue size N.
    @inlinable public var queueSize: Int { ring.size }
    /// Requests taken and not yet completed.
    @inlinable public var takenCount: Int { state.pointee.takenCount }
    /// The violation that broke the queue, or `nil` while it works.
    @inlinable public var brokenReason: VirtqueueError? { state.pointee.broken }
    /// Whether the queue is broken.
    @inlinable public var isBroken: Bool { state.pointee.broken != nil }

    // MARK: Taking requests (seed steps 4 and 5)

    /// Takes the next available chain, or returns `nil` if the driver has made none available.
    ///
    /// `avail.idx` and the ring entry are read once; the chain is parsed and validated in full
    /// (see `docs/trust-model.md`) and copied into private memory before it is returned.
    ///
    /// - Throws: ``VirtqueueError`` naming the violation, which breaks the queue (afterwards
    ///   ``VirtqueueError/Code-swift.struct/queueBroken``), or
    ///   ``VirtqueueError/Code-swift.struct/segmentStoreExhausted`` if the device holds too many
    ///   segments (complete some requests and call again; the queue stays usable).
    @inlinable @inline(__always)
    public mutating func nextRequest() throws(VirtqueueError) -> DeviceRequest? {
        if let broken = state.pointee.broken { throw .broken(by: broken) }
        let state = self.state
        let indirect = self.indirect
        let endpoint = self.endpoint
        let taken: (head: UInt16, chain: ParsedChain)?
        do throws(VirtqueueError) {
            taken = try region.withUnsafeMutableBytes { (raw) throws(VirtqueueError) -> (UInt16, ParsedChain)? in
                let base = raw.baseAddress.unsafelyUnwrapped
                let lastAvailable = state.pointee.lastAvailable
                let size = state.pointee.ring.size
                // Entries up to the last validated avail.idx need no new load of it: reading the
                // driver's index only when those run out keeps its cache line from bouncing
                // between the two CPUs on every request (vhost's last_avail_idx / avail_idx).
                if state.pointee.availableShadow == lastAvailable {
                    let index = endpoint.loadPeerIndex(in: base)
                    if index == lastAvailable { return nil }
                    guard Int(index &- lastAvailable) <= size else {
                        throw .availableIndexJump(index, last: lastAvailable, size: size)
                    }
                    state.pointee.availableShadow = index
                }
                let mask = state.pointee.ring.mask
                let slot = state.pointee.ring.availableRing &+ Int(lastAvailable & mask) &* 2
                let head = UInt16(littleEndian: UnsafeRawPointer(base + slot).loadUnaligned(as: UInt16.self))
                guard Int(head) < size else {
                    throw .headOutOfRange(head, slot: lastAvailable & mask, size: size)
                }
                guard !state.pointee.headTaken[Int(head)] else { throw .headAlreadyInFlight(head) }
                let chain = try state.pointee.parseChain(head: head, in: base, indirectAllowed: indirect)
                return (head, chain)
            }
        } catch {
            if error.isPeerViolation, state.pointee.broken == nil { state.pointee.broken = error }
            throw error
        }
        guard let taken else { return nil }
        state.pointee.commit(taken.chain)
        state.pointee.lastAvailable &+= 1
        state.pointee.headTaken[Int(taken.head)] = true
        state.pointee.takenCount &+= 1
        return DeviceRequest(id: taken.head, chain: taken.chain, queueIdentity: queueIdentity)
    }

    /// Calls `body` with each device-readable segment of `request`, in order, as a view into the
    /// region (zero-copy): the seed's `virtqueue_gather_available`.
    ///
    /// - Warning: The pointer is valid only inside `body`. The driver may be hostile and change
    ///   the bytes while you read them: copy or validate what you rely on.
    @inlinable @inline(__always)
    public func forEachReadable<E: Error>(
        in request: borrowing DeviceRequest,
        _ body: (UnsafeRawBufferPointer) throws(E) -> Void
    ) throws(E) {
        try forEachSegment(of: request, writable: false) { (bytes) throws(E) in
            try body(UnsafeRawBufferPointer(bytes))
        }
    }

    /// Calls `body` with each device-writable segment of `request`, in order, as a view into
    /// the region (zero-copy).
    ///
    /// - Warning: The pointer is valid only inside `body`.
    @inlinable @inline(__always)
    public func forEachWritable<E: Error>(
        in request: borrowing DeviceRequest,
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Void
    ) throws(E) {
        try forEachSegment(of: request, writable: true, body)
    }

    /// Copies the request's device-readable bytes into `destination`, in order.
    ///
    /// - Returns: The number of bytes copied: the smaller of the readable bytes and `destination.count`.
    @inlinable
    public func gather(_ request: borrowing DeviceRequest, into destination: UnsafeMutableRawBufferPointer) -> Int {
        var copied = 0
        forEachReadable(in: request) { bytes in
            let count = min(bytes.count, destination.count - copied)
            guard count > 0 else { return }
            UnsafeMutableRawBufferPointer(rebasing: destination[copied..<copied + count])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<count]))
            copied += count
        }
        return copied
    }

    /// Copies `bytes` into the request's device-writable segments, in order.
    ///
    /// - Returns: The number of bytes written: the smaller of `bytes.count` and the writable room.
    ///   Pass it to ``complete(_:written:)``.
    @inlinable
    public func scatter(_ bytes: UnsafeRawBufferPointer, into request: borrowing DeviceRequest) -> Int {
        var written = 0
        forEachWritable(in: request) { destination in
            let count = min(destination.count, bytes.count - written)
            guard count > 0 else { return }
            UnsafeMutableRawBufferPointer(rebasing: destination[0..<count])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[written..<written + count]))
            written += count
        }
        return written
    }

    // MARK: Completing (seed steps 6 and 7)

    /// Returns a request to the driver through the used ring with the number of bytes written,
    /// and publishes the new `used.idx`.
    ///
    /// Completing does not notify the driver: complete a batch, then call ``notifyIfNeeded()``.
    ///
    /// - Parameters:
    ///   - request: The request to return; consumed.
    ///   - written: Bytes written into the writable segments, at most
    ///     ``DeviceRequest/writableByteCount``.
    /// - Throws: ``VirtqueueError/Code-swift.struct/writtenLengthTooLarge`` if `written` is out of
    ///   range — the request is still returned, with 0 bytes written, so the driver never loses
    ///   its buffers; ``VirtqueueError/Code-swift.struct/notOwned`` for another queue's request;
    ///   ``VirtqueueError/Code-swift.struct/queueBroken`` if the queue broke meanwhile.
    @inlinable @inline(__always)
    public mutating func complete(_ request: consuming DeviceRequest, written: Int) throws(VirtqueueError) {
        guard request.queueIdentity == queueIdentity else {
            throw .requestNotOwned(request.queueIdentity, queue: queueIdentity)
        }
        state.pointee.releaseSegments(
            first: request.firstSegment,
            last: request.lastSegment,
            count: request.segmentCount
        )
        state.pointee.headTaken[Int(request.id)] = false
        state.pointee.takenCount &-= 1
        if let broken = state.pointee.broken { throw .broken(by: broken) }
        let valid = written >= 0 && written <= request.writableByteCount
        let length = valid ? UInt32(written) : 0
        let used = state.pointee.nextUsed
        let ring = self.ring
        let id = request.id
        region.withUnsafeMutableBytes { raw in
            let base = raw.baseAddress.unsafelyUnwrapped
            let slot = base + (ring.usedRing &+ Int(used & ring.mask) &* 8)
            slot.storeBytes(of: UInt32(id).littleEndian, as: UInt32.self)
            slot.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
            endpoint.publish(used &+ 1, in: base)
        }
        state.pointee.nextUsed = used &+ 1
        state.pointee.completedSinceNotifyCheck &+= 1
        guard valid else {
            throw .writtenLengthTooLarge(written, writable: request.writableByteCount, request: id)
        }
    }

    /// Notifies the driver if it asked to hear about the requests completed since the last call
    /// (no `VIRTQ_AVAIL_F_NO_INTERRUPT`, or `used_event` crossed under EVENT_IDX).
    ///
    /// - Returns: Whether the notifier was called.
    @inlinable
    @discardableResult
    public mutating func notifyIfNeeded() throws(VirtqueueError) -> Bool {
        if let broken = state.pointee.broken { throw .broken(by: broken) }
        let new = state.pointee.nextUsed
        let old = state.pointee.lastNotifyCheck
        let moves = state.pointee.completedSinceNotifyCheck
        state.pointee.lastNotifyCheck = new
        state.pointee.completedSinceNotifyCheck = 0
        let needed = region.withUnsafeMutableBytes { raw in
            endpoint.peerNeedsNotification(new: new, old: old, moves: moves, in: raw.baseAddress.unsafelyUnwrapped)
        }
        if needed { try notifier.notify() }
        return needed
    }

    /// Blocks until the driver has made at least one chain available.
    ///
    /// Spins `spins` times reading `avail.idx`, then asks for a kick (clearing
    /// `VIRTQ_USED_F_NO_NOTIFY`, or setting `avail_event` under EVENT_IDX), re-checks, and
    /// sleeps on the notifier.
    ///
    /// - Throws: ``VirtqueueError`` from the notifier (``VirtqueueError/Code-swift.struct/peerDied``
    ///   when the driver has gone) or ``VirtqueueError/Code-swift.struct/queueBroken``.
    @inlinable
    public mutating func waitForRequests(spins: Int = 256) throws(VirtqueueError) {
        if let broken = state.pointee.broken { throw .broken(by: broken) }
        let lastAvailable = state.pointee.lastAvailable
        let notifier = self.notifier
        do throws(VirtqueueError) {
            try region.withUnsafeMutableBytes { (raw) throws(VirtqueueError) in
                try endpoint.waitForPeer(
                    lastSeen: lastAvailable,
                    spins: spins,
                    notifier: notifier,
                    in: raw.baseAddress.unsafelyUnwrapped
                )
            }
        } catch {
            if error.code == .peerDied, state.pointee.broken == nil { state.pointee.broken = error }
            throw error
        }
    }

    @inlinable @inline(__always)
    func forEachSegment<E: Error>(
        of request: borrowing DeviceRequest,
        writable: Bool,
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Void
    ) throws(E) {
        guard request.queueIdentity == queueIdentity else { return }
        let segments = state.pointee.segments
        var segment = request.firstSegment
        let count = request.segmentCount
        try region.withUnsafeMutableBytes { (raw) throws(E) in
            let base = raw.baseAddress.unsafelyUnwrapped
            for _ in 0..<count {
                let record = segments[Int(segment)]
                if record.writable == writable {
                    try body(UnsafeMutableRawBufferPointer(start: base + Int(record.offset), count: Int(record.length)))
                }
                segment = record.next
            }
        }
    }
}

extension DeviceQueue: @unchecked Sendable where Region: Sendable & ~Copyable {}
