import Virtqueue

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Fuzz target (b): the driver side parsing a used ring written by a hostile device, against
/// a known set of chains in flight.
///
/// The input's first two bytes pick a configuration: queue size (4, 8, 16 or 1), INDIRECT_DESC,
/// EVENT_IDX, the pool's buffer size, the indirect threshold, and the pool's buffer count. If
/// the first byte is `M` (``mappedMarker``), those two follow it and then a ``MappedLayout``
/// selector: the driver runs on memory of several mappings, built with the general
/// `DriverQueue(memory:placement:…:pool:…)`, its pool spanning the buffer mappings (a slot that
/// straddles a boundary or a gap must be left unused). The rest is a program of operations,
/// each one byte followed by its operands:
///
/// | op % 10 | operation |
/// |---|---|
/// | 0, 1 | build and submit a chain of 0–3 readable and 0–3 writable segments (lengths from the input); one readable segment with bit 6 of the shape set goes out with `send(count:_:)` |
/// | 2 | write up to 255 raw bytes anywhere in the used ring (flags, idx, elements, `avail_event`) |
/// | 3 | write one used element naming a chain in flight (or a raw id) and advance `used.idx` |
/// | 4 | set `used.idx` |
/// | 5 | call `takeUsed()` up to 4 times, keeping or freeing what comes back |
/// | 6 | free a kept chain |
/// | 7 | call `notifyIfNeeded()` |
/// | 8 | call `waitForUsed(spins:)` (a wait ends as if the device died) |
/// | 9 | write `used.flags` and `avail_event` |
///
/// At the end the queue is broken on purpose (if it is not already) and every chain still in
/// flight is taken back with `takeAbandoned()`. After each operation the harness checks that:
/// each used chain names a submitted chain in flight, comes back at most once, reports at most
/// its writable bytes and still holds the bytes the driver wrote; each error is the one an
/// independent check of the used element predicts, and breaks the queue; the free descriptor
/// and buffer counts match the chains the harness knows of; the driver wrote nothing outside
/// its descriptor table, available ring and usable pool slots (not the header, not the used
/// ring); every chain it publishes parses, by the reference parser, to the segments it was
/// built from; the pool has exactly the usable slots the harness counts; and the canaries
/// around every mapping are intact. Finally every buffer and descriptor is free again.
public enum DriverFuzzer {
    /// The first byte of an input in the multi-mapping mode (`M`, 0x4D), as for ``DeviceFuzzer``:
    /// no input committed before the mode existed starts with it.
    public static let mappedMarker: UInt8 = 0x4D
    /// The first byte of a packed input with VIRTIO_F_IN_ORDER (`O`, 0x4F), followed by the
    /// usual configuration byte: buffer IDs must then be ring indices, a used descriptor stands
    /// for the batch from the oldest chain in flight to the one it names, and the harness's
    /// device skips a batch's descriptors (docs/wire-format.md §12.6).
    public static let inOrderMarker: UInt8 = 0x4F

    /// Runs one input.
    ///
    /// - Parameter packed: Whether the ring is a packed one (the `FuzzDriverPacked` target): the
    ///   queue sizes are 3, 5, 13 and 1, the region's ring format is packed, the program's ops 2,
    ///   3, 4 and 9 write the packed ring as a device would (``DriverSession/performPacked(_:_:)``),
    ///   and what the driver publishes is checked with
    ///   ``ReferenceChainParser/parsePacked(index:wrap:held:room:)``.
    /// - Throws: ``InvariantFailure`` naming the broken invariant.
    public static func run(_ input: UnsafeRawBufferPointer, packed: Bool = false) throws(InvariantFailure) {
        var reader = FuzzInput(input)
        var config = reader.byteOrZero()
        let mapped = config == mappedMarker && !packed
        if mapped { config = reader.byteOrZero() }
        let inOrder = packed && config == inOrderMarker
        if inOrder { config = reader.byteOrZero() }
        let size = (packed ? [3, 5, 13, 1] : [4, 8, 16, 1])[Int(config & 3)]
        var features: Features = []
        if config & 4 != 0 { features.insert(.indirectDescriptors) }
        if config & 8 != 0 { features.insert(.eventIndex) }
        if packed { features.insert(.ringPacked) }
        if inOrder { features.insert(.inOrder) }
        let bufferSize = [16, 32, 64, 256][Int(config >> 4) & 3]
        let threshold = [1, 2, 4, 16][Int(config >> 6) & 3]
        let bufferCount = Int(reader.byteOrZero()) % (4 * size + 2)
        let memory: FuzzMemory
        let placement: QueuePlacement
        let pool: Range<UInt64>
        var header: RegionLayout?
        if mapped {
            // A virtio 1.x ring (the region format implies VERSION_1; the general initialiser is told).
            features.insert(.version1)
            let layout = MappedLayout(size: size, bufferBytes: bufferCount * bufferSize, selector: reader.byteOrZero())
            memory = FuzzMemory(layout.mappings)
            placement = layout.placement
            let ranges = layout.bufferRanges
            // The pool: from the buffers' first 16-byte boundary to their end; none when no
            // boundary is left before the end (a clipped buffer area of a few bytes).
            let low = placement.bufferArea?.lowerBound ?? ranges[0].lowerBound
            let high = placement.bufferArea?.upperBound ?? ranges[ranges.count - 1].upperBound
            guard (low + 15) & ~15 <= high else {
                memory.deallocate()
                return
            }
            pool = (low + 15) & ~15..<high
        } else {
            let layout: RegionLayout
            do {
                layout = try RegionLayout(
                    queueSizes: [size],
                    dataAreaSize: bufferCount * bufferSize,
                    features: features
                )
                placement = try layout.placement(ofQueue: 0)
            } catch {
                throw InvariantFailure("a valid layout was refused: \(error)")
            }
            memory = FuzzMemory([(0, layout.regionSize, 0)])
            header = layout
            pool = placement.bufferArea ?? 0..<0
        }
        defer { memory.deallocate() }
        if header == nil,
            try DriverSession.checkRefusedPool(
                memory: memory,
                placement: placement,
                features: features,
                pool: pool,
                bufferSize: bufferSize
            )
        {
            return
        }
        let session = try DriverSession(
            memory: memory,
            placement: placement,
            header: header,
            features: features,
            pool: pool,
            bufferSize: bufferSize,
            threshold: threshold
        )
        while let op = reader.byte() {
            try session.perform(op, &reader)
        }
        try session.finish()
    }
}

/// One driver queue under fuzzing, with the harness's model of the chains it owns.
final class DriverSession {
    /// A submitted chain as the harness remembers it.
    struct Submitted {
        var readable: [[UInt8]]
        var writable: [Int]
        var indirect: Bool
        var writableByteCount: Int { writable.reduce(0, +) }
        var segmentCount: Int { readable.count + writable.count }
        /// Buffers the chain holds while in flight (its segments, plus an indirect table).
        var bufferCount: Int { segmentCount + (indirect ? 1 : 0) }
        /// Descriptors the chain holds while in flight.
        var descriptorCount: Int { indirect ? 1 : segmentCount }
    }

    var queue: DriverQueue<FuzzMemory, FuzzNotifier>
    let memory: FuzzMemory
    /// Every ring field's bus address, from the core.
    let addresses: SplitRingAddresses
    let size: Int
    let eventIndex: Bool
    let bufferSize: Int
    /// The used ring's bytes.
    let usedRingBytes: Int
    /// The bus address of each pool slot the driver may use: inside one mapping (and the buffer
    /// area), by the harness's own count.
    let usableSlots: Set<UInt64>
    /// The bytes the driver must never write, per mapping: everything but the descriptor table,
    /// the available ring and the usable pool slots.
    let protected: [[Range<Int>]]
    /// The device's view of what the driver publishes.
    let reference: ReferenceChainParser
    var shadow: MemoryShadow

    var inFlight: [UInt16: Submitted] = [:]
    var lastUsed: UInt16 = 0
    /// The last `used.idx` the driver read and validated: like the core, the model reads the
    /// index again only once the elements before it are taken.
    var usedShadow: UInt16 = 0
    var nextAvailable: UInt16 = 0
    var lastNotifyCheck: UInt16 = 0
    var movesSinceNotifyCheck = 0
    var broken = false
    var serial: UInt8 = 0
    /// Used chains taken and not yet freed, with what they hold.
    var kept: UnsafeMutablePointer<UsedChain>
    var keptModels: [Submitted] = []

    // The packed ring's model: the driver's available and used positions, and where the
    // harness, as the device, writes its next used descriptor.
    let packed: Bool
    var availablePosition = PackedPosition(index: 0, wrap: true)
    var usedPosition = PackedPosition(index: 0, wrap: true)
    var devicePosition = PackedPosition(index: 0, wrap: true)
    /// Under IN_ORDER (packed): the chains in flight in the order submitted, and what is left of
    /// the batch being taken back (id, written bytes), oldest first.
    var inOrder = false
    var submissionOrder: [UInt16] = []
    var pendingBatch: [(id: UInt16, written: Int)] = []
    /// No buffer ID held: the device's state `checkPublishedPacked` parses the driver's lists with.
    let noneHeld: [Bool]

    /// Attaches a driver: through `header` (this package's region format, written first; the
    /// pool is its data area), or, without one, through the general initialiser on `placement`
    /// with `pool`.
    init(
        memory: FuzzMemory,
        placement: QueuePlacement,
        header: RegionLayout?,
        features: Features,
        pool: Range<UInt64>,
        bufferSize: Int,
        threshold: Int
    ) throws(InvariantFailure) {
        do {
            if let header {
                try header.initialize(memory)
                queue = try DriverQueue(
                    region: memory,
                    notifier: FuzzNotifier(),
                    bufferSize: bufferSize,
                    indirectThreshold: threshold
                )
            } else {
                queue = try DriverQueue(
                    memory: memory,
                    placement: placement,
                    notifier: FuzzNotifier(),
                    features: features,
                    pool: pool,
                    bufferSize: bufferSize,
                    indirectThreshold: threshold
                )
            }
        } catch {
            throw InvariantFailure("attaching a driver to fresh memory failed: \(error)")
        }
        let addresses = SplitRingAddresses(placement)
        let reference = ReferenceChainParser(
            memory: memory,
            addresses: addresses,
            bufferArea: placement.bufferArea,
            indirectNegotiated: features.contains(.indirectDescriptors)
        )
        let slots = Self.usableSlots(windows: reference.windows, pool: pool, bufferSize: bufferSize).usable
        var allowed = [placement.areas[0].range, placement.areas[1].range]
        allowed += slots.map { $0..<$0 + UInt64(bufferSize) }
        self.protected = memory.mappings.map { mapping in
            // The mapping's offsets the allowed ranges cover, merged in order; the rest is
            // protected.
            let covered = allowed.compactMap { range -> Range<Int>? in
                let low = max(range.lowerBound, mapping.busRange.lowerBound)
                let high = min(range.upperBound, mapping.busRange.upperBound)
                return low < high ? Int(low - mapping.bus)..<Int(high - mapping.bus) : nil
            }.sorted { $0.lowerBound < $1.lowerBound }
            var ranges: [Range<Int>] = []
            var start = 0
            for range in covered {
                if range.lowerBound > start { ranges.append(start..<range.lowerBound) }
                start = max(start, range.upperBound)
            }
            if start < mapping.region.count { ranges.append(start..<mapping.region.count) }
            return ranges
        }
        self.memory = memory
        self.addresses = addresses
        self.size = placement.size
        self.eventIndex = features.contains(.eventIndex)
        self.bufferSize = bufferSize
        self.usedRingBytes = placement.areas[2].range.count
        self.usableSlots = slots
        self.reference = reference
        self.shadow = MemoryShadow(memory)
        self.kept = .allocate(capacity: max(placement.size, 1))
        self.inOrder = features.contains(.inOrder)
        self.packed = placement.format == .packed
        self.noneHeld = [Bool](repeating: false, count: placement.size)
        try check(
            queue.bufferCount == slots.count,
            "the driver has \(queue.bufferCount) pool buffers, the harness counts \(slots.count) usable slots"
        )
    }

    /// The pool's slots, and those the driver may use: all of a slot's bytes in one window (a
    /// mapping cut to the buffer area).
    static func usableSlots(
        windows: [Range<UInt64>],
        pool: Range<UInt64>,
        bufferSize: Int
    ) -> (count: Int, usable: Set<UInt64>) {
        var usable: Set<UInt64> = []
        var count = 0
        var slot = pool.lowerBound
        while pool.upperBound - slot >= UInt64(bufferSize) {
            count += 1
            if windows.contains(where: { $0.lowerBound <= slot && slot + UInt64(bufferSize) <= $0.upperBound }) {
                usable.insert(slot)
            }
            slot += UInt64(bufferSize)
        }
        return (count, usable)
    }

    /// Whether a driver must refuse the pool (it has slots, none of them usable) — and if so,
    /// checks that it does, with `invalidConfiguration`.
    static func checkRefusedPool(
        memory: FuzzMemory,
        placement: QueuePlacement,
        features: Features,
        pool: Range<UInt64>,
        bufferSize: Int
    ) throws(InvariantFailure) -> Bool {
        let windows = ReferenceChainParser(
            memory: memory,
            addresses: SplitRingAddresses(placement),
            bufferArea: placement.bufferArea,
            indirectNegotiated: false
        ).windows
        let slots = usableSlots(windows: windows, pool: pool, bufferSize: bufferSize)
        guard slots.count > 0, slots.usable.isEmpty else { return false }
        do {
            _ = try DriverQueue(
                memory: memory,
                placement: placement,
                notifier: FuzzNotifier(),
                features: features,
                pool: pool,
                bufferSize: bufferSize
            )
        } catch {
            try check(error.code == .invalidConfiguration, "a pool with no usable slot was refused with \(error)")
            return true
        }
        throw InvariantFailure("a pool of \(slots.count) slots, none inside one mapping, was accepted")
    }

    deinit {
        kept.deinitialize(count: keptModels.count)
        kept.deallocate()
    }

    func load16(_ address: UInt64) -> UInt16 { memory.load16(address) }

    /// The device's writes: into the used ring only (the harness's shadow follows them).
    func deviceWrite(_ bytes: UnsafeRawBufferPointer, at address: UInt64) {
        memory.forEachPiece(at: address, count: bytes.count) { piece in
            (memory.mappings[piece.mapping].region.base + piece.offset)
                .copyMemory(from: bytes.baseAddress! + piece.source, byteCount: piece.count)
            shadow.set(piece, from: bytes)
        }
    }

    func deviceWrite<T: FixedWidthInteger>(_ value: T, at address: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { deviceWrite($0, at: address) }
    }

    // MARK: Operations

    func perform(_ op: UInt8, _ reader: inout FuzzInput) throws(InvariantFailure) {
        if packed, performPacked(op, &reader) {
            try checkState()
            return
        }
        switch op % 10 {
        case 0, 1:
            try submit(shape: reader.byteOrZero(), &reader)
        case 2:
            let offset = Int(reader.byteOrZero()) % usedRingBytes
            let bytes = reader.bytes(upTo: Int(reader.byteOrZero()))
            deviceWrite(
                UnsafeRawBufferPointer(rebasing: bytes[0..<min(bytes.count, usedRingBytes - offset)]),
                at: addresses.placement.deviceArea + UInt64(offset)
            )
        case 3:
            let selector = reader.byteOrZero()
            let heads = inFlight.keys.sorted()
            let id: UInt32 =
                selector & 0x80 == 0 && !heads.isEmpty ? UInt32(heads[Int(selector) % heads.count]) : reader.uint32()
            let lengthSelector = reader.byteOrZero()
            let length = Self.usedLength(
                lengthSelector,
                writable: inFlight[UInt16(truncatingIfNeeded: id)]?.writableByteCount ?? 0
            )
            let index = load16(addresses.usedIndex)
            // The used element `{le32 id, le32 len}`.
            let element = addresses.usedElement(slot: Int(index))
            deviceWrite(id, at: element)
            deviceWrite(length, at: element + 4)
            deviceWrite(index &+ 1, at: addresses.usedIndex)
        case 4:
            deviceWrite(reader.uint16(), at: addresses.usedIndex)
        case 5:
            let policy = reader.byteOrZero()
            for round in 0...(policy % 4) {
                guard try take(keep: policy >> (2 + round) & 1 == 1) else { break }
            }
        case 6:
            try freeKept(Int(reader.byteOrZero()))
        case 7:
            try notify()
        case 8:
            try wait(spins: Int(reader.byteOrZero() % 3))
        default:
            deviceWrite(reader.uint16(), at: addresses.usedFlags)
            deviceWrite(reader.uint16(), at: addresses.availableEvent)
        }
        try checkState()
    }

    /// A used length a hostile device reports for a chain of `writable` bytes, from an input
    /// byte: all of them, fewer, too many, or near 2^32.
    static func usedLength(_ selector: UInt8, writable: Int) -> UInt32 {
        switch selector >> 6 {
        case 0: UInt32(writable)
        case 1: UInt32(Int(selector & 0x3F) % (writable + 1))
        case 2: UInt32(writable + 1 + Int(selector & 0x3F))
        default: UInt32.max - UInt32(selector & 0x3F)
        }
    }

    // MARK: Submitting

    func submit(shape: UInt8, _ reader: inout FuzzInput) throws(InvariantFailure) {
        // One readable segment, nothing else, and bit 6: the one-call `send`.
        if shape & 0x7F == 0x41 { return try send(&reader) }
        var chain = queue.makeChain()
        var model = Submitted(readable: [], writable: [], indirect: false)
        var appendError: VirtqueueError?
        serial &+= 1
        let readableCount = Int(shape & 3)
        let writableCount = Int(shape >> 2 & 3)
        do throws(VirtqueueError) {
            for index in 0..<readableCount {
                let count = Int(reader.byteOrZero()) % (bufferSize + 2)
                let payload = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index) ^ serial }
                try queue.appendReadable(to: &chain, copying: payload)
                model.readable.append(payload)
            }
            for _ in 0..<writableCount {
                let capacity = Int(reader.byteOrZero()) % (bufferSize + 2)
                try queue.appendWritable(to: &chain, capacity: capacity)
                model.writable.append(capacity)
            }
            if shape & 0x10 != 0 {
                // A readable segment after the writable ones must be refused (when there are any).
                try queue.appendReadable(to: &chain, copying: [serial])
                model.readable.append([serial])
            }
        } catch {
            appendError = error
        }
        model.indirect = chain.isIndirect
        try check(
            chain.segmentCount == model.segmentCount,
            "chain has \(chain.segmentCount) segments, model \(model.segmentCount)"
        )
        if let appendError {
            let callerCodes: [VirtqueueError.Code] = [
                .payloadTooLarge, .readableAfterWritable, .chainTooLong, .poolExhausted, .ringFull,
            ]
            if broken {
                try check(appendError.code == .queueBroken, "appending to a broken queue reported \(appendError)")
            } else {
                try check(callerCodes.contains(appendError.code), "appending reported \(appendError)")
                try check(!queue.isBroken, "a caller mistake broke the queue: \(appendError)")
            }
            do {
                try queue.discard(chain)
            } catch {
                throw InvariantFailure("discarding an own chain failed: \(error)")
            }
            return
        }
        if shape & 0x20 != 0 {
            do {
                try queue.discard(chain)
            } catch {
                throw InvariantFailure("discarding an own chain failed: \(error)")
            }
            return
        }
        let head: UInt16
        do {
            head = try queue.submit(chain)
        } catch {
            // An empty chain is a caller mistake whether or not the queue is broken.
            if model.segmentCount == 0 {
                try check(error.code == .emptyChain, "submitting an empty chain reported \(error)")
            } else {
                try check(broken && error.code == .queueBroken, "submitting a chain reported \(error)")
            }
            return
        }
        try submitted(head: head, model)
    }

    /// A one-segment chain sent with `send(count:_:)`: the same model and checks as a chain of
    /// one readable segment built and submitted with three calls, and `fill` called only for a
    /// chain that is sent.
    func send(_ reader: inout FuzzInput) throws(InvariantFailure) {
        serial &+= 1
        let count = Int(reader.byteOrZero()) % (bufferSize + 2)
        let payload = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7) ^ serial }
        var filled = false
        let head: UInt16
        do {
            head = try queue.send(count: count) { bytes in
                bytes.copyBytes(from: payload)
                filled = true
            }
        } catch {
            try check(!filled, "send filled a chain it refused (\(error))")
            if broken {
                try check(error.code == .queueBroken, "sending on a broken queue reported \(error)")
            } else {
                let callerCodes: [VirtqueueError.Code] = [.payloadTooLarge, .poolExhausted, .ringFull]
                try check(callerCodes.contains(error.code), "sending reported \(error)")
                try check(!queue.isBroken, "a caller mistake broke the queue: \(error)")
            }
            return
        }
        try check(filled, "send did not fill the chain it sent")
        try submitted(head: head, Submitted(readable: [payload], writable: [], indirect: false))
    }

    /// Checks and records a chain the driver accepted with head `head`.
    func submitted(head: UInt16, _ model: Submitted) throws(InvariantFailure) {
        try check(!broken, "a broken queue accepted a chain")
        try check(Int(head) < size, "head \(head) is not below the queue size")
        try check(inFlight[head] == nil, "head \(head) was handed out while still in flight")
        inFlight[head] = model
        if packed {
            if inOrder {
                try check(
                    Int(head) == availablePosition.index,
                    "in-order buffer ID \(head) is not the ring index of its first descriptor, \(availablePosition)"
                )
                submissionOrder.append(head)
            }
            try checkPublishedPacked(head: head, model)
            return
        }
        nextAvailable &+= 1
        movesSinceNotifyCheck += 1
        try check(
            load16(addresses.availableIndex) == nextAvailable,
            "avail.idx \(load16(addresses.availableIndex)) != \(nextAvailable)"
        )
        let entry = load16(addresses.availableEntry(slot: Int(nextAvailable &- 1)))
        try check(entry == head, "avail.ring slot holds \(entry), not the head \(head)")
        try checkPublished(head: head, model)
    }

    /// Parses the chain the driver published as the device would, with the reference parser:
    /// it must be valid, each segment a usable pool slot's bytes, the readable ones holding the
    /// payloads and the writable ones the capacities asked for.
    func checkPublished(head: UInt16, _ model: Submitted) throws(InvariantFailure) {
        guard case .valid(let segments) = reference.parse(head: Int(head)) else {
            throw InvariantFailure("the chain published at head \(head) is \(reference.parse(head: Int(head)))")
        }
        try checkPublished(head: head, segments: segments, model)
    }

    /// Checks the segments of a published chain against the usable pool slots and the model.
    func checkPublished(
        head: UInt16,
        segments: [ReferenceChainParser.Segment],
        _ model: Submitted
    ) throws(InvariantFailure) {
        try check(
            segments.allSatisfy { usableSlots.contains($0.address) && Int($0.length) <= bufferSize },
            "chain \(head) published segments \(segments) outside the usable pool slots"
        )
        // The readable segments, in order, hold the payloads; the writable ones have the
        // capacities asked for.
        var readable = 0
        var writable = 0
        var same = true
        for segment in segments {
            if segment.writable {
                same = same && writable < model.writable.count && model.writable[writable] == Int(segment.length)
                writable += 1
            } else {
                same =
                    same && readable < model.readable.count
                    && Self.holds(
                        UnsafeRawBufferPointer(
                            start: memory.pointer(at: segment.address, count: Int(segment.length)),
                            count: Int(segment.length)
                        ),
                        model.readable[readable]
                    )
                readable += 1
            }
        }
        try check(
            same && readable == model.readable.count && writable == model.writable.count,
            "chain \(head) published \(segments), not the chain built (\(model.readable.map(\.count)) readable, \(model.writable) writable)"
        )
    }

    /// Whether `bytes` are exactly `payload`.
    static func holds(_ bytes: UnsafeRawBufferPointer, _ payload: [UInt8]) -> Bool {
        guard bytes.count == payload.count else { return false }
        guard let start = bytes.baseAddress, bytes.count > 0 else { return true }
        return payload.withUnsafeBytes { memcmp(start, $0.baseAddress!, bytes.count) == 0 }
    }

    // MARK: Taking back

    /// What `takeUsed()` must do next, as the harness predicts it from ring memory.
    struct TakePrediction {
        /// The error it must throw, or `nil`.
        var code: VirtqueueError.Code?
        /// Whether a used entry is there (a chain must come back unless `code` says otherwise).
        var ready: Bool
        var id: UInt32
        var written: Int
        /// The ring state the prediction is made from, for the failure messages (formatted
        /// only for one).
        var context: Context
    }

    /// The ring state a prediction is made from, as values: a message is made of it only when
    /// a check fails.
    enum Context: CustomStringConvertible {
        case split(index: UInt16, lastUsed: UInt16, id: UInt32, length: UInt32)
        case packed(at: PackedPosition, flags: UInt16, id: UInt16, length: UInt32)
        /// Under IN_ORDER: a used descriptor that starts a batch.
        case batch(at: PackedPosition, id: UInt16, length: UInt32, batch: [(id: UInt16, written: Int)])
        /// Under IN_ORDER: the next chain of a batch being taken back.
        case inBatch([(id: UInt16, written: Int)], at: PackedPosition)

        var description: String {
            switch self {
            case .split(let index, let lastUsed, let id, let length):
                "(used.idx \(index), last seen \(lastUsed), element \(id) / \(length))"
            case .packed(let position, let flags, let id, let length):
                "at \(position) (flags 0x\(String(flags, radix: 16)), id \(id), len \(length))"
            case .batch(let position, let id, let length, let batch):
                "at \(position) (id \(id), len \(length): the batch \(batch))"
            case .inBatch(let batch, let position):
                "in a batch \(batch) at \(position)"
            }
        }
    }

    /// The prediction on the split ring, from `used.idx` (read when the driver reads it) and
    /// the used element at the driver's position.
    func predictSplit() -> TakePrediction {
        let readsIndex = usedShadow == lastUsed
        let index = readsIndex ? load16(addresses.usedIndex) : usedShadow
        let element = addresses.usedElement(slot: Int(lastUsed))
        let id = memory.load32(element)
        let length = memory.load32(element + 4)
        var expectedCode: VirtqueueError.Code?
        if broken {
            expectedCode = .queueBroken
        } else if index != lastUsed {
            if Int(index &- lastUsed) > size {
                expectedCode = .usedIndexJump
            } else {
                usedShadow = index
                if id >= UInt32(size) {
                    expectedCode = .usedIDOutOfRange
                } else if let model = inFlight[UInt16(id)] {
                    if Int(length) > model.writableByteCount { expectedCode = .usedLengthTooLarge }
                } else {
                    expectedCode = .usedIDNotInFlight
                }
            }
        }
        return TakePrediction(
            code: expectedCode,
            ready: index != lastUsed,
            id: id,
            written: Int(length),
            context: .split(index: index, lastUsed: lastUsed, id: id, length: length)
        )
    }

    /// Calls `takeUsed()` once and checks the outcome against the prediction from the ring.
    /// - Returns: Whether a chain came back.
    func take(keep: Bool) throws(InvariantFailure) -> Bool {
        let prediction = packed ? predictPacked() : predictSplit()
        let expectedCode = prediction.code
        let context = prediction.context
        let used: UsedChain?
        do {
            used = try queue.takeUsed()
        } catch {
            try check(
                error.code == expectedCode,
                "takeUsed \(context) reported \(error), expected \(String(describing: expectedCode))"
            )
            try check(queue.isBroken, "the queue is not broken after \(error)")
            if !broken { try check(error.isPeerViolation, "\(error) is not a peer violation") }
            broken = true
            return false
        }
        try check(
            expectedCode == nil,
            "takeUsed \(context) succeeded where \(String(describing: expectedCode)) was expected"
        )
        guard let used else {
            try check(!prediction.ready, "takeUsed \(context) returned nil")
            return false
        }
        try check(prediction.ready, "takeUsed \(context) returned a chain with no new used entry")
        try check(used.status == .completed, "a used chain has status \(used.status)")
        try check(UInt32(used.id) == prediction.id, "takeUsed \(context) returned id \(used.id)")
        try check(
            used.writtenByteCount == prediction.written,
            "takeUsed \(context) reported \(used.writtenByteCount) written"
        )
        guard let model = inFlight.removeValue(forKey: used.id) else {
            throw InvariantFailure("takeUsed returned chain \(used.id), which is not in flight")
        }
        if inOrder {
            try check(used.id == submissionOrder.first, "chain \(used.id) came back before \(submissionOrder)")
            submissionOrder.removeFirst()
            pendingBatch.removeFirst()
        }
        if packed {
            usedPosition.advance(by: model.descriptorCount, size: size)
        } else {
            lastUsed &+= 1
        }
        try checkReturned(used, model)
        try keepOrFree(used, model, keep: keep)
        return true
    }

    /// Checks a returned chain's segments: the readable ones still hold what the driver wrote,
    /// the writable ones show at most what the device reported, each at the start of a usable
    /// pool slot (traced back through the harness's table of mappings).
    func checkReturned(_ used: borrowing UsedChain, _ model: Submitted) throws(InvariantFailure) {
        try check(
            used.writtenByteCount <= model.writableByteCount,
            "chain \(used.id) reports \(used.writtenByteCount) written of \(model.writableByteCount) writable"
        )
        // Walked once, compared as it goes: the readable views hold the payloads, the writable
        // ones are the reported prefix of the capacities.
        var readable = 0
        var writable = 0
        var readableSame = true
        var writableSame = true
        var remaining = used.writtenByteCount
        var outside = false
        let memory = self.memory
        let slots = usableSlots
        let bufferSize = self.bufferSize
        do {
            try queue.forEachSegment(of: used) { isWritable, bytes in
                let start = bytes.baseAddress ?? UnsafeRawPointer(memory.mappings[0].region.base)
                let address = memory.locate(start, count: bytes.count)?.address
                if address.map({ !slots.contains($0) }) ?? true || bytes.count > bufferSize { outside = true }
                if isWritable {
                    if writable < model.writable.count {
                        let count = min(remaining, model.writable[writable])
                        remaining -= count
                        writableSame = writableSame && bytes.count == count
                    } else {
                        writableSame = false
                    }
                    writable += 1
                } else {
                    readableSame =
                        readableSame && readable < model.readable.count && Self.holds(bytes, model.readable[readable])
                    readable += 1
                }
            }
        } catch {
            throw InvariantFailure("viewing the segments of own chain \(used.id) failed: \(error)")
        }
        try check(!outside, "chain \(used.id) has a segment outside the usable pool slots")
        try check(readableSame && readable == model.readable.count, "chain \(used.id) readable bytes changed")
        if !writableSame || writable != model.writable.count {
            var views: [Int] = []
            try? queue.forEachSegment(of: used) { isWritable, bytes in if isWritable { views.append(bytes.count) } }
            var left = used.writtenByteCount
            let expected = model.writable.map { capacity in
                let count = min(left, capacity)
                left -= count
                return count
            }
            throw InvariantFailure("chain \(used.id) writable views \(views) != \(expected)")
        }
    }

    func keepOrFree(_ used: consuming UsedChain, _ model: Submitted, keep: Bool) throws(InvariantFailure) {
        if keep && keptModels.count < size {
            kept.advanced(by: keptModels.count).initialize(to: used)
            keptModels.append(model)
            return
        }
        do {
            try queue.free(used)
        } catch {
            throw InvariantFailure("freeing an own chain failed: \(error)")
        }
    }

    func freeKept(_ selector: Int) throws(InvariantFailure) {
        guard !keptModels.isEmpty else { return }
        let index = selector % keptModels.count
        let used = kept.advanced(by: index).move()
        let last = keptModels.count - 1
        if index != last {
            kept.advanced(by: index).initialize(to: kept.advanced(by: last).move())
        }
        keptModels.swapAt(index, last)
        keptModels.removeLast()
        do {
            try queue.free(used)
        } catch {
            throw InvariantFailure("freeing a kept chain failed: \(error)")
        }
    }

    // MARK: Notifications

    func notify() throws(InvariantFailure) {
        let result = Result { () throws(VirtqueueError) in try queue.notifyIfNeeded() }
        if packed {
            try checkPackedNotification(
                result,
                broken: broken,
                new: availablePosition,
                moves: &movesSinceNotifyCheck,
                size: size,
                event: addresses.placement.deviceArea,
                in: memory
            )
            return
        }
        let new = nextAvailable
        let old = lastNotifyCheck
        let moves = movesSinceNotifyCheck
        if !broken {
            lastNotifyCheck = new
            movesSinceNotifyCheck = 0
        }
        try checkNotification(
            result,
            broken: broken,
            expected: expectedNotification(
                new: new,
                old: old,
                moves: moves,
                eventIndex: eventIndex,
                peerEvent: load16(addresses.availableEvent),
                peerFlags: load16(addresses.usedFlags)
            ),
            old: old,
            new: new
        )
    }

    func wait(spins: Int) throws(InvariantFailure) {
        var thrown: VirtqueueError?
        do {
            try queue.waitForUsed(spins: spins)
        } catch {
            thrown = error
        }
        if broken {
            try check(thrown?.code == .queueBroken, "waiting on a broken queue reported \(String(describing: thrown))")
            return
        }
        // Under IN_ORDER a batch being taken back is ready without reading the ring.
        let ready =
            packed
            ? !pendingBatch.isEmpty
                || load16(addresses.descriptor(usedPosition.index) + 14) & 0x8080 == (usedPosition.wrap ? 0x8080 : 0)
            : load16(addresses.usedIndex) != lastUsed
        if inFlight.isEmpty || ready {
            // Returns at once, or after asking for a notification and re-checking; the driver's
            // suppression fields live in the available ring, which checkState does not compare.
            try check(thrown == nil, "waiting with a chain ready failed: \(String(describing: thrown))")
            return
        }
        try check(thrown?.code == .peerDied, "a wait with no peer reported \(String(describing: thrown))")
        try check(queue.isBroken, "the queue is not broken after its peer died")
        broken = true
    }

    // MARK: Accounting

    func checkState() throws(InvariantFailure) {
        try memory.checkCanaries()
        for (mapping, ranges) in protected.enumerated() {
            for range in ranges {
                if let (offset, actual) = shadow.firstDifference(in: memory, mapping: mapping, offsets: range) {
                    let address = memory.mappings[mapping].bus + UInt64(offset)
                    throw InvariantFailure(
                        "the driver changed the byte at bus 0x\(String(address, radix: 16)), outside its areas and pool slots, to \(actual)"
                    )
                }
            }
        }
        try check(queue.isBroken == broken, "queue broken: \(queue.isBroken), model: \(broken)")
        try check(queue.inFlightCount == inFlight.count, "inFlightCount \(queue.inFlightCount) != \(inFlight.count)")
        let buffersHeld =
            inFlight.values.reduce(0) { $0 + $1.bufferCount } + keptModels.reduce(0) { $0 + $1.segmentCount }
        try check(
            queue.freeBufferCount == queue.bufferCount - buffersHeld,
            "\(queue.freeBufferCount) of \(queue.bufferCount) buffers free, but chains hold \(buffersHeld)"
        )
        let descriptorsHeld = inFlight.values.reduce(0) { $0 + $1.descriptorCount }
        try check(
            queue.freeDescriptorCount == size - descriptorsHeld,
            "\(queue.freeDescriptorCount) of \(size) descriptors free, but chains hold \(descriptorsHeld)"
        )
        if !broken {
            try check(queue.takeAbandoned() == nil, "a working queue abandoned a chain")
        }
    }

    /// Breaks the queue (if the device has not), takes every chain in flight back with
    /// `takeAbandoned()`, frees everything, and checks that the pool is whole again.
    func finish() throws(InvariantFailure) {
        if !broken {
            queue.markBroken(VirtqueueError(.peerDied, "the fuzz run is over"))
            broken = true
        }
        let cause = queue.brokenReason?.code
        while let abandoned = queue.takeAbandoned() {
            try check(
                abandoned.status == .abandoned(cause ?? .peerDied),
                "abandoned chain has status \(abandoned.status)"
            )
            try check(abandoned.writtenByteCount == 0, "abandoned chain reports \(abandoned.writtenByteCount) written")
            guard let model = inFlight.removeValue(forKey: abandoned.id) else {
                throw InvariantFailure("takeAbandoned returned chain \(abandoned.id), which is not in flight")
            }
            try checkReturned(abandoned, model)
            try keepOrFree(abandoned, model, keep: false)
            try checkState()
        }
        try check(inFlight.isEmpty, "takeAbandoned left chains \(inFlight.keys.sorted()) behind")
        while !keptModels.isEmpty {
            try freeKept(0)
        }
        try checkState()
        try check(
            queue.freeBufferCount == queue.bufferCount,
            "\(queue.freeBufferCount) of \(queue.bufferCount) buffers free"
        )
        try check(queue.freeDescriptorCount == size, "\(queue.freeDescriptorCount) of \(size) descriptors free")
        try check(queue.inFlightCount == 0, "\(queue.inFlightCount) chains still in flight")
    }
}
