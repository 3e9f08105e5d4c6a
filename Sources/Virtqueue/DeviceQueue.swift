/// A request the device has taken from the available ring: one validated descriptor chain.
///
/// The request is `~Copyable`: the device completes it exactly once, with
/// ``DeviceQueue/complete(_:written:publish:)``, and the compiler enforces that. Its segments are
/// zero-copy views into the region, reached through ``DeviceQueue/forEachReadable(in:_:)`` and
/// ``DeviceQueue/forEachWritable(in:_:)``. It belongs to the queue that took it: every other
/// queue refuses it (<doc:TrustModel#A-token-belongs-to-its-queue>).
///
/// A request dropped instead of completed — the device's code threw, or another queue refused
/// it — is completed on its own queue with 0 bytes written when it goes out of scope, so the
/// driver gets its buffers back (the next ``DeviceQueue/notifyIfNeeded()`` tells it).
@frozen
public struct DeviceRequest: ~Copyable {
    /// The chain's id: its head descriptor index. The device echoes it in the used ring.
    public let id: UInt16
    /// The queue's private state: the record of this request's head, and where a dropped
    /// request is completed; kept alive while any of the queue's requests is
    /// (``DeviceState/takenCount``). Its address is the request's owner: no two live queues
    /// share one.
    @usableFromInline let state: UnsafeMutablePointer<DeviceState>

    @inlinable
    init(id: UInt16, state: UnsafeMutablePointer<DeviceState>) {
        self.id = id
        self.state = state
    }

    deinit {
        DeviceState.requestDropped(state, id: id)
    }

    /// Ends the request once its queue has completed it: no deinit runs.
    @inlinable @inline(__always)
    consuming func end() {
        discard self
    }

    /// The device's private record of the request (read once from the ring, validated).
    @inlinable var record: UnsafeMutablePointer<HeldHead> { state.pointee.record(id) }
    /// Bytes in the device-readable segments.
    @inlinable public var readableByteCount: Int { record.pointee.readableByteCount }
    /// Bytes of room in the device-writable segments.
    @inlinable public var writableByteCount: Int { record.pointee.writableByteCount }
    /// The number of segments.
    @inlinable public var segmentCount: Int { Int(record.pointee.segmentCount) }
    /// All bytes of the chain, readable and writable: the seed's `virtqueue_scattered_available_size`.
    @inlinable public var totalByteCount: Int { readableByteCount + writableByteCount }
}

/// The device's end of a virtqueue, split or packed: it takes chains the driver made available,
/// reads and writes their buffers in place, and returns them through the used ring (or, packed,
/// as used descriptors).
///
/// This is the seL4 libvirtqueue device (`virtqueue_device_t`) rebuilt to virtio 1.x. Every
/// chain is parsed once, by one validating parser, into private memory before any of it is
/// used; a malformed chain breaks the queue with a typed error. The seed's steps 4 to 7:
///
/// ```swift
/// try device.waitForRequests()
/// while let request = try device.nextRequest() {          // 4. get the available entry
///     try device.forEachReadable(in: request) { bytes in … }   // 5. gather its buffers
///     let written = try device.scatter(reply, into: request)
///     try device.complete(request, written: written)           // 6. move it to the used ring
/// }
/// try device.notifyIfNeeded()                                  // 7. notify the driver
/// ```
///
/// ### Split and packed rings
///
/// The ring format is the placement's (``QueuePlacement/format``; a region's, from its header),
/// with ``Features/ringPacked`` set exactly for the packed ring; a device accepts that bit
/// whatever its `supportedFeatures`, since the ring is the core's business, not the device
/// code's. Every call, and the ``DeviceRequest`` token, are the same for both formats
/// (`docs/wire-format.md` §12.7): on the packed ring a request's ``DeviceRequest/id`` is the
/// buffer ID the driver wrote on the list's last descriptor, ``complete(_:written:publish:)``
/// writes a used descriptor at the used position, and ``cursor`` holds positions with their
/// wrap counters (bit 15). ``resubmittedRequest(head:)`` has no packed meaning and throws
/// ``VirtqueueError/Code-swift.struct/featureNotSupported`` there.
///
/// ### IN_ORDER
///
/// With ``Features/inOrder`` negotiated, on either ring, the device must use buffers in the order
/// the driver made them available (docs/wire-format.md §6.4, §12.6 for the packed ring). The calls are the same, and the device code may
/// still complete requests in any order: ``complete(_:written:publish:)`` holds a completion
/// that comes before the ones taken before it — in private memory, a slot per position, nothing
/// allocated — and uses it when those have completed, with the `publish` choice of the call
/// that completes the last of them (QEMU's `virtqueue_ordered_fill` / `virtqueue_ordered_flush`
/// do the same). The driver sees nothing of a held completion until then; a device that holds a
/// request for long holds back every request taken after it.
///
/// A run of completions staged with `publish: false` is reported with one used element — the
/// spec's batch; on the packed ring one used descriptor, at the run's first position, after
/// which the used position skips the run's descriptors — as long as each buffer but the last was written completely (`written` equal
/// to its ``DeviceRequest/writableByteCount``): the spec counts a batch's earlier buffers as used
/// completely, so a buffer written in part ends the batch and keeps its own element and length.
/// The device does not rely on anything the driver does in order. The queue accepts IN_ORDER
/// whatever `supportedFeatures` says: the ordering is the ring core's to keep.
public struct DeviceQueue<Memory: GuestMemory & ~Copyable, Notify: Notifier>: ~Copyable {
    /// The memory the rings and buffers live in; the queue owns it (it is released with the
    /// queue). Kept behind a pointer, allocated once here, so that the queue stays a few words:
    /// ``serve(_:spins:)`` hands the queue to ``DeviceComponent/handle(_:on:)`` for every
    /// request, and a large queue would be copied into each call.
    @usableFromInline let memory: UnsafeMutablePointer<Memory>
    /// The notifier this queue notifies the driver through and waits on for requests.
    public let notifier: Notify
    /// The features negotiated for this queue.
    public let features: Features
    @usableFromInline let state: UnsafeMutablePointer<DeviceState>
    /// Which queue of its device this is: the index in the region (or, for a virtual machine's
    /// rings, the vhost-user ring index). A device that serves several queues reads it in
    /// ``DeviceComponent/handle(_:on:)`` to learn which queue a request came from.
    public let queueIndex: Int

    /// Builds the device's end of the ring `placement` describes in `memory`.
    ///
    /// The placement's areas are resolved through the memory once, here; every descriptor is
    /// translated once, when its chain is validated. The ring resumes from `placement.cursor`
    /// (the cursor a stopped queue reported, or ``QueueCursor/start``).
    ///
    /// - Parameters:
    ///   - memory: The guest memory; the queue owns it from now on.
    ///   - placement: Where the ring lies and where it starts.
    ///   - notifier: Notifies the driver; waits for the driver's kicks.
    ///   - features: The negotiated features. Transport bits must be ones the ring core
    ///     implements; device-type bits pass through to the device code.
    ///   - supportedFeatures: The features this device implements. A negotiated set with anything
    ///     else is refused.
    ///   - segmentCapacity: How many segments the device can hold across all requests it has
    ///     taken and not completed; `nil` for four times the queue size. (Each head keeps the
    ///     first four segments of its request in slots of its own, allocated here whatever the
    ///     capacity; the rest of a longer chain goes to an overflow store of this many entries.)
    ///   - queueIndex: Which queue of its device this is (``queueIndex``); 0 by default.
    /// - Throws: ``VirtqueueError`` naming the value: a placement outside memory or malformed
    ///   (``VirtqueueError/Code-swift.struct/invalidPlacement``,
    ///   ``VirtqueueError/Code-swift.struct/addressOutOfRange``,
    ///   ``VirtqueueError/Code-swift.struct/misaligned``), malformed mappings, or a feature bit
    ///   not implemented (``VirtqueueError/Code-swift.struct/featureNotSupported``).
    public init(
        memory: consuming Memory,
        placement: QueuePlacement,
        notifier: Notify,
        features: Features,
        supportedFeatures: Features = .all,
        segmentCapacity: Int? = nil,
        queueIndex: Int = 0
    ) throws(VirtqueueError) {
        try features.validateForRing()
        // VERSION_1, the ring format and IN_ORDER are the ring core's, not the device code's: the
        // core keeps the order whatever order the device code completes in.
        let unsupported = features.subtracting(supportedFeatures.union([.version1, .ringPacked, .inOrder]))
        guard unsupported.isEmpty else {
            throw VirtqueueError(
                .featureNotSupported,
                "the negotiated features include \(unsupported), which this device does not support"
            )
        }
        let capacity = segmentCapacity ?? 4 * placement.size
        guard capacity >= placement.size, capacity < Int(UInt32.max) else {
            throw VirtqueueError(
                .invalidConfiguration,
                "segment capacity \(capacity) is below the queue size \(placement.size) or too large"
            )
        }
        let setup = try QueueSetup(memory: memory, placement: placement, features: features)
        self.memory = .allocate(capacity: 1)
        self.memory.initialize(to: memory)
        self.notifier = notifier
        self.features = features
        self.queueIndex = queueIndex
        self.state = .allocate(capacity: 1)
        self.state.initialize(
            to: DeviceState(
                setup: setup,
                eventIndex: features.contains(.eventIndex),
                cursor: placement.cursor,
                segmentCapacity: capacity,
                indirectAllowed: features.contains(.indirectDescriptors),
                identity: makeQueueIdentity()
            )
        )
        if features.contains(.inOrder) {
            state.pointee.enableInOrder(cursor: placement.cursor)
            state.pointee.completionMask = UInt(bitPattern: Int.min)
        }
    }

    /// Attaches the device to queue `queueIndex` of one of this package's regions, reading and
    /// validating its header (``RegionLayout/init(reading:)``) for the placement and the features —
    /// or taking the layout from ``GuestMemory/regionLayout`` when the memory knows it, so the
    /// header is read once.
    ///
    /// - Parameters:
    ///   - region: Memory holding a region header at bus address 0; the queue owns it from now on.
    ///   - notifier: Notifies the driver; waits for the driver's kicks.
    ///   - queueIndex: Which of the region's queues to serve.
    ///   - supportedFeatures: The features this device implements. A region whose negotiated
    ///     features include anything else is refused.
    ///   - segmentCapacity: See ``init(memory:placement:notifier:features:supportedFeatures:segmentCapacity:queueIndex:)``.
    /// - Throws: ``VirtqueueError`` if the header is malformed or asks for unsupported features.
    public init(
        region: consuming Memory,
        notifier: Notify,
        queueIndex: Int = 0,
        supportedFeatures: Features = .all,
        segmentCapacity: Int? = nil
    ) throws(VirtqueueError) {
        let layout = try RegionLayout.of(region)
        try self.init(
            memory: region,
            placement: try layout.placement(ofQueue: queueIndex),
            notifier: notifier,
            features: layout.features,
            supportedFeatures: supportedFeatures,
            segmentCapacity: segmentCapacity,
            queueIndex: queueIndex
        )
    }

    deinit {
        state.releaseQueue()
        memory.deinitialize(count: 1)
        memory.deallocate()
    }

    /// The queue size N.
    @inlinable public var queueSize: Int { state.pointee.ring.size }
    /// Requests taken and not yet completed.
    @inlinable public var takenCount: Int { state.pointee.takenCount }
    /// The violation that broke the queue (or ``VirtqueueError/Code-swift.struct/queueStopped``
    /// once it stopped), or `nil` while it works.
    @inlinable public var brokenReason: VirtqueueError? { state.pointee.side.broken }
    /// Whether the queue is broken (or stopped).
    @inlinable public var isBroken: Bool { state.pointee.side.broken != nil }
    /// Where the ring stands: the next available entry the device will take and the next used
    /// entry it will publish (packed: those positions, each with its wrap counter in bit 15).
    @inlinable public var cursor: QueueCursor {
        QueueCursor(nextAvailable: state.pointee.side.consumed, nextUsed: state.pointee.side.published)
    }

    // MARK: Taking requests (seed steps 4 and 5)

    /// Takes the next available chain, or returns `nil` if the driver has made none available.
    ///
    /// `avail.idx` and the ring entry are read once; the chain is parsed and validated in full
    /// (see `docs/trust-model.md`), each address translated once, and copied into private memory
    /// before it is returned.
    ///
    /// - Throws: ``VirtqueueError`` naming the violation, which breaks the queue (afterwards
    ///   ``VirtqueueError/Code-swift.struct/queueBroken``), or
    ///   ``VirtqueueError/Code-swift.struct/segmentStoreExhausted`` if the device holds too many
    ///   segments (complete some requests and call again; the queue stays usable).
    @inlinable @inline(__always)
    public mutating func nextRequest() throws(VirtqueueError) -> DeviceRequest? {
        let state = self.state
        if state.pointee.side.diverted { return try DeviceState.nextDivertedRequest(state) }
        guard let position = try state.pointee.side.nextPeerEntry() else { return nil }
        let entry = UnsafeRawPointer(state.pointee.ring.availableEntry(position))
        let head = UInt16(littleEndian: entry.loadUnaligned(as: UInt16.self))
        guard Int(head) < state.pointee.headLimit else {
            try DeviceState.takeRequestOffTheUsualPath(state, head: head, position: position)
            return DeviceRequest(id: head, state: state)
        }
        guard state.pointee.record(head).pointee.segmentCount == 0 else {
            throw state.pointee.side.breakQueue(.headAlreadyInFlight(head))
        }
        try state.pointee.takeChain(head: head)
        state.pointee.side.consumed = position &+ 1
        state.pointee.takenCount &+= 1
        return DeviceRequest(id: head, state: state)
    }

    /// Takes the chain that starts at `head` again, without reading the available ring: for a
    /// device that resumes a ring whose previous device took requests and died before it
    /// completed them (vhost-user's inflight tracking, `docs/vhost-user.md`).
    ///
    /// The queue must have been built with a cursor that counts those requests as taken — its
    /// `nextAvailable` past its `nextUsed` by at least as many chains as are resubmitted — and
    /// the chain is parsed and validated exactly as ``nextRequest()`` does. Complete it as any
    /// other request.
    ///
    /// - Throws: ``VirtqueueError`` naming the violation, which breaks the queue: `head` not
    ///   below the queue size (``VirtqueueError/Code-swift.struct/headOutOfRange``), already
    ///   held (``VirtqueueError/Code-swift.struct/headAlreadyInFlight``), more chains than the
    ///   cursor has in flight (``VirtqueueError/Code-swift.struct/tooManyResubmitted``), or a
    ///   malformed chain. On a packed ring, whose device keeps no descriptors of a list once it
    ///   has taken it, ``VirtqueueError/Code-swift.struct/featureNotSupported`` (the queue is not
    ///   broken).
    public mutating func resubmittedRequest(head: UInt16) throws(VirtqueueError) -> DeviceRequest {
        let state = self.state
        try state.pointee.side.checkUsable()
        guard state.pointee.side.packed == nil else { throw .packedResubmission(head) }
        let size = state.pointee.ring.size
        guard Int(head) < size else {
            throw state.pointee.side.breakQueue(.resubmittedHeadOutOfRange(head, size: size))
        }
        guard state.pointee.record(head).pointee.segmentCount == 0 else {
            throw state.pointee.side.breakQueue(.headAlreadyInFlight(head))
        }
        let inFlight = Int(state.pointee.side.consumed &- state.pointee.side.published)
        guard state.pointee.takenCount < inFlight else {
            throw state.pointee.side.breakQueue(.tooManyResubmitted(head, inFlight: inFlight))
        }
        try state.pointee.takeChain(head: head)
        state.pointee.takenCount &+= 1
        if state.pointee.inOrder.enabled { state.pointee.recordResubmittedInOrder(head: head) }
        return DeviceRequest(id: head, state: state)
    }

    /// Calls `body` with each device-readable segment of `request`, in order, as a view into the
    /// region (zero-copy): the seed's `virtqueue_gather_available`.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/notOwned`` if `request` is another queue's,
    ///   before `body` is called (<doc:TrustModel#A-token-belongs-to-its-queue>); otherwise
    ///   whatever `body` throws, unchanged.
    /// - Warning: The pointer is valid only inside `body`. The driver may be hostile and change
    ///   the bytes while you read them: copy or validate what you rely on.
    @inlinable @inline(__always)
    public func forEachReadable<E: Error>(
        in request: borrowing DeviceRequest,
        _ body: (UnsafeRawBufferPointer) throws(E) -> Void
    ) throws {
        try checkOwned(request, passedTo: "forEachReadable")
        try forEachSegment(of: request, writable: false) { (bytes) throws(E) in
            try body(UnsafeRawBufferPointer(bytes))
        }
    }

    /// Calls `body` with each device-writable segment of `request`, in order, as a view into
    /// the region (zero-copy).
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/notOwned`` if `request` is another queue's,
    ///   before `body` is called (<doc:TrustModel#A-token-belongs-to-its-queue>); otherwise
    ///   whatever `body` throws, unchanged.
    /// - Warning: The pointer is valid only inside `body`.
    @inlinable @inline(__always)
    public func forEachWritable<E: Error>(
        in request: borrowing DeviceRequest,
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Void
    ) throws {
        try checkOwned(request, passedTo: "forEachWritable")
        try forEachSegment(of: request, writable: true, body)
    }

    /// Copies the request's device-readable bytes into `destination`, in order.
    ///
    /// - Returns: The number of bytes copied: the smaller of the readable bytes and `destination.count`.
    /// - Throws: ``VirtqueueError/Code-swift.struct/notOwned`` if `request` is another queue's
    ///   (<doc:TrustModel#A-token-belongs-to-its-queue>); nothing is copied.
    @inlinable
    public func gather(
        _ request: borrowing DeviceRequest,
        into destination: UnsafeMutableRawBufferPointer
    ) throws(VirtqueueError) -> Int {
        try checkOwned(request, passedTo: "gather")
        var copied = 0
        forEachSegment(of: request, writable: false) { bytes in
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
    ///   Pass it to ``complete(_:written:publish:)``.
    /// - Throws: ``VirtqueueError/Code-swift.struct/notOwned`` if `request` is another queue's
    ///   (<doc:TrustModel#A-token-belongs-to-its-queue>); nothing is written.
    @inlinable
    public func scatter(
        _ bytes: UnsafeRawBufferPointer,
        into request: borrowing DeviceRequest
    ) throws(VirtqueueError) -> Int {
        try checkOwned(request, passedTo: "scatter")
        var written = 0
        forEachSegment(of: request, writable: true) { destination in
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
    /// and publishes the new `used.idx` — or, with `publish: false`, stages it: the used element
    /// is written and the index is published later, once for the whole batch, by ``publish()``,
    /// ``notifyIfNeeded()``, ``waitForRequests(spins:)`` or ``stop()`` (QEMU's `virtqueue_fill`
    /// and `virtqueue_flush`).
    ///
    /// Completing does not notify the driver: complete a batch, then call ``notifyIfNeeded()``.
    ///
    /// - Parameters:
    ///   - request: The request to return; consumed.
    ///   - written: Bytes written into the writable segments, at most
    ///     ``DeviceRequest/writableByteCount``.
    ///   - publish: Whether to publish `used.idx` now (the default) or leave it to the next
    ///     ``publish()``, ``notifyIfNeeded()``, wait or ``stop()``. The driver does not see a
    ///     staged completion until then; a queue that breaks first never publishes it. Under
    ///     IN_ORDER a completion that comes before the ones taken before it is held until they
    ///     complete, and a staged run of completely written buffers is one used element (see
    ///     the IN_ORDER section of ``DeviceQueue``).
    /// - Throws: ``VirtqueueError/Code-swift.struct/writtenLengthTooLarge`` if `written` is out of
    ///   range — the request is still returned, with 0 bytes written, so the driver never loses
    ///   its buffers; ``VirtqueueError/Code-swift.struct/notOwned`` for another queue's request,
    ///   which is not returned (<doc:TrustModel#A-token-belongs-to-its-queue>);
    ///   ``VirtqueueError/Code-swift.struct/queueBroken`` if the queue broke meanwhile.
    @inlinable @inline(__always)
    public mutating func complete(_ request: consuming DeviceRequest, written: Int, publish: Bool = true)
        throws(VirtqueueError)
    {
        try checkOwned(request, passedTo: "complete")
        let id = request.id
        request.end()
        let writable = state.pointee.release(head: id)
        state.pointee.takenCount &-= 1
        if state.pointee.side.diverted {
            let valid = written >= 0 && written <= writable
            try state.pointee.side.checkUsable()
            state.pointee.storePackedUsed(
                id: id,
                length: valid ? UInt32(written) : 0,
                writable: writable,
                publish: publish
            )
            guard valid else {
                state.pointee.side.publishStaged()
                throw .writtenLengthTooLarge(written, writable: writable, request: id)
            }
            return
        }
        // One unsigned comparison (`writable` is never negative); a written length out of range,
        // and every completion under IN_ORDER (`completionMask`), take the path out
        // of line.
        guard UInt(bitPattern: written) | state.pointee.completionMask <= UInt(bitPattern: writable) else {
            return try state.pointee.completeOffTheUsualPath(id, written: written, writable: writable, publish: publish)
        }
        let element = state.pointee.ring.usedElement(state.pointee.side.published)
        element.storeBytes(of: UInt32(id).littleEndian, as: UInt32.self)
        element.storeBytes(of: UInt32(truncatingIfNeeded: written).littleEndian, toByteOffset: 4, as: UInt32.self)
        if publish {
            state.pointee.side.publish()
        } else {
            state.pointee.side.stage()
        }
    }

    /// Publishes `used.idx` for the requests completed with `publish: false` since the last
    /// publication; nothing when there are none. ``notifyIfNeeded()``, ``waitForRequests(spins:)``
    /// and ``stop()`` do this first on their own.
    @inlinable
    public mutating func publish() {
        state.pointee.side.publishStaged()
    }

    /// Notifies the driver if it asked to hear about the requests completed since the last call
    /// (no `VIRTQ_AVAIL_F_NO_INTERRUPT`, or `used_event` crossed under EVENT_IDX).
    ///
    /// - Returns: Whether the notifier was called.
    /// - Throws: ``VirtqueueError`` from the notifier (``VirtqueueError/Code-swift.struct/peerDied``
    ///   when the driver has gone, which also breaks the queue), or
    ///   ``VirtqueueError/Code-swift.struct/queueBroken``.
    @inlinable
    @discardableResult
    public mutating func notifyIfNeeded() throws(VirtqueueError) -> Bool {
        try state.pointee.side.notifyIfNeeded(notifier)
    }

    /// Blocks until the driver has made at least one chain available.
    ///
    /// Spins `spins` times reading `avail.idx`, then asks for a kick (clearing
    /// `VIRTQ_USED_F_NO_NOTIFY`, or setting `avail_event` under EVENT_IDX), re-checks, and
    /// sleeps on the notifier.
    ///
    /// - Throws: ``VirtqueueError`` from the notifier (``VirtqueueError/Code-swift.struct/peerDied``
    ///   when the driver has gone, which breaks the queue) or
    ///   ``VirtqueueError/Code-swift.struct/queueBroken``.
    @inlinable
    public mutating func waitForRequests(spins: Int = 256) throws(VirtqueueError) {
        try state.pointee.side.waitForPeer(spins: spins, notifier: notifier)
    }

    // MARK: Stopping and resuming

    /// Stops the queue and reports where the ring stands, so that a new device queue built with
    /// this cursor (``QueuePlacement/cursor``) resumes the ring: nothing lost, nothing repeated.
    /// vhost-user's `GET_VRING_BASE`.
    ///
    /// The driver may keep submitting meanwhile: what it makes available after the cursor is the
    /// next queue's to take. Every later call on this queue reports
    /// ``VirtqueueError/Code-swift.struct/queueStopped`` (or, if it broke before, the violation);
    /// stopping again reports the same cursor.
    ///
    /// - Returns: The cursor: the next available entry to take and the next used entry to publish.
    /// - Throws: ``VirtqueueError/Code-swift.struct/requestsOutstanding`` if requests were taken
    ///   and not completed (complete them first; the queue keeps working).
    public mutating func stop() throws(VirtqueueError) -> QueueCursor {
        guard state.pointee.takenCount == 0 else {
            throw VirtqueueError(
                .requestsOutstanding,
                "\(state.pointee.takenCount) requests were taken and not completed; complete them before stopping"
            )
        }
        state.pointee.side.publishStaged()
        let cursor = self.cursor
        _ = state.pointee.side.breakQueue(
            VirtqueueError(.queueStopped, "the queue was stopped at cursor \(cursor)")
        )
        return cursor
    }

    /// The token rule (<doc:TrustModel#A-token-belongs-to-its-queue>): `request` must be this
    /// queue's — made with this queue's state, which no other live queue shares.
    @inlinable @inline(__always)
    func checkOwned(_ request: borrowing DeviceRequest, passedTo call: StaticString) throws(VirtqueueError) {
        guard request.state == state else {
            throw DeviceState.notOwned(request.state, passedTo: call, on: state)
        }
    }

    /// Calls `body` with each of `request`'s segments that is `writable` (or not). The caller has
    /// checked that `request` is this queue's (``checkOwned(_:passedTo:)``).
    @inlinable @inline(__always)
    func forEachSegment<E: Error>(
        of request: borrowing DeviceRequest,
        writable: Bool,
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Void
    ) throws(E) {
        let record = state.pointee.record(request.id)
        let count = Int(record.pointee.segmentCount)
        let readable = Int(record.pointee.readableSegmentCount)
        let end = writable ? count : readable
        var index = writable ? readable : 0
        let slots = state.pointee.slots(request.id)
        guard count > DeviceState.inlineSegmentCount else {
            while index < end {
                try body(UnsafeMutableRawBufferPointer(start: slots[index].host, count: Int(slots[index].length)))
                index &+= 1
            }
            return
        }
        // A long chain: its first segments in the head's slots, the rest in the overflow store,
        // linked in order.
        let segments = state.pointee.segments
        var overflow = record.pointee.overflowFirst
        for position in 0..<end {
            let stored: SegmentRecord
            if position < DeviceState.inlineSegmentCount {
                stored = slots[position]
            } else {
                stored = segments[Int(overflow)]
                overflow = stored.next
            }
            if position >= index {
                try body(UnsafeMutableRawBufferPointer(start: stored.host, count: Int(stored.length)))
            }
        }
    }
}

extension DeviceQueue: @unchecked Sendable where Memory: Sendable & ~Copyable {}
