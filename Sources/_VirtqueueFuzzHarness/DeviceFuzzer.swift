import Virtqueue

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Fuzz target (a): the device side parsing a descriptor table and available ring written by
/// a hostile driver.
///
/// The input's first byte picks a configuration: queue size (4, 8, 16 or 1), INDIRECT_DESC,
/// EVENT_IDX, the device's segment capacity and the data area's size. If it is `M`
/// (``mappedMarker``), the next three bytes are that configuration, a ``MappedLayout`` selector
/// and a cursor, and the queue runs on memory of several mappings — rings in one, the buffer
/// space (the data area's size) split over two or three, adjacent or with gaps — built with the
/// general `DeviceQueue(memory:placement:…)`, resumed at `used.idx` 0, 0x1111, …, 0xFFFF with
/// up to N entries outstanding. The rest is a program of operations, each one byte followed by
/// its operands, played against one `DeviceQueue`:
///
/// | op % 10 | operation |
/// |---|---|
/// | 0 | write up to 255 raw bytes anywhere in the driver's areas (descriptor table, available ring, buffer space) |
/// | 1 | set `avail.idx` |
/// | 2 | advance `avail.idx` by 0…N+1 |
/// | 3 | call `nextRequest()` up to 4 times |
/// | 4 | complete a held request with an in-range or out-of-range length |
/// | 5 | call `notifyIfNeeded()` |
/// | 6 | call `waitForRequests(spins:)` (a wait ends as if the driver died) |
/// | 7 | write one descriptor, addressed near the buffer space's start, into the table or an indirect table |
/// | 8 | write one available-ring entry |
/// | 9 | write `avail.flags` and `used_event` |
///
/// At the end every held request is completed and the ring is drained. After each operation
/// the harness checks that: every request matches an independent parser and translator
/// (``ReferenceChainParser``) segment for segment — one segment per mapping a buffer crosses —
/// each segment's host address traced back to a mapping and bus address inside the buffer area;
/// every error is typed and a peer violation breaks the queue for good; the used ring holds
/// exactly what was completed; nothing outside the used ring, the writable segments and the
/// notification fields changed, in any mapping; and the canaries around every mapping are intact.
public enum DeviceFuzzer {
    /// The first byte of an input in the multi-mapping mode (`M`, 0x4D): no input committed
    /// before the mode existed starts with it, so every one of them keeps its meaning.
    public static let mappedMarker: UInt8 = 0x4D
    /// The first byte of a packed input with VIRTIO_F_IN_ORDER (`O`, 0x4F), followed by the
    /// usual configuration byte: the harness then expects completions used in the order taken,
    /// those released together folded into one used descriptor while each was written
    /// completely (docs/wire-format.md §12.6).
    public static let inOrderMarker: UInt8 = 0x4F

    /// Runs one input.
    ///
    /// - Parameter packed: Whether the ring is a packed one (the `FuzzDevicePacked` target): the
    ///   configuration byte is followed by a cursor byte — the device's position (modulo N) and,
    ///   in bit 7, its wrap counter, the ring's descriptors left as a previous lap used them —
    ///   the queue sizes are 3, 5, 13 and 1, the program's ops 1, 2, 7, 8 and 9 write the packed
    ///   ring (``DeviceSession/performPacked(_:_:)``), and the oracle is
    ///   ``ReferenceChainParser/parsePacked(index:wrap:held:room:)``.
    /// - Throws: ``InvariantFailure`` naming the broken invariant.
    public static func run(_ input: UnsafeRawBufferPointer, packed: Bool = false) throws(InvariantFailure) {
        var reader = FuzzInput(input)
        var config = reader.byteOrZero()
        let mapped = config == mappedMarker && !packed
        // Packed: a first byte `O` (0x4F) negotiates IN_ORDER; the configuration byte follows.
        let inOrder = packed && config == inOrderMarker
        if inOrder { config = reader.byteOrZero() }
        var selector: UInt8 = 0
        var cursorByte: UInt8 = 0
        if mapped {
            config = reader.byteOrZero()
            selector = reader.byteOrZero()
            cursorByte = reader.byteOrZero()
        }
        if packed { cursorByte = reader.byteOrZero() }
        let size = (packed ? [3, 5, 13, 1] : [4, 8, 16, 1])[Int(config & 3)]
        var features: Features = []
        if config & 4 != 0 { features.insert(.indirectDescriptors) }
        if config & 8 != 0 { features.insert(.eventIndex) }
        // The packed ring runs with VERSION_1, through the general initialiser.
        if packed { features.formUnion([.ringPacked, .version1]) }
        if inOrder { features.insert(.inOrder) }
        let capacity = [size, 2 * size, 4 * size, size * size + size][Int(config >> 4) & 3]
        let dataAreaSize = [128, 256, 1024, 4096][Int(config >> 6) & 3]
        let memory: FuzzMemory
        let placement: QueuePlacement
        let bufferSpace: [Range<UInt64>]
        var header: RegionLayout?
        if mapped {
            // A virtio 1.x ring (the region format implies VERSION_1; the general initialiser is told).
            features.insert(.version1)
            // A resumed ring: used.idx at 0, 0x1111, … 0xFFFF, with up to N entries a previous
            // device queue took and never completed.
            let nextUsed = UInt16(cursorByte >> 4) &* 0x1111
            let nextAvailable = nextUsed &+ UInt16(Int(cursorByte & 0x0F) % (size + 1))
            let layout = MappedLayout(
                size: size,
                bufferBytes: dataAreaSize,
                selector: selector,
                cursor: QueueCursor(nextAvailable: nextAvailable, nextUsed: nextUsed)
            )
            memory = FuzzMemory(layout.mappings)
            placement = layout.placement
            bufferSpace = layout.bufferRanges
        } else {
            let layout: RegionLayout
            var regionPlacement: QueuePlacement
            do {
                layout = try RegionLayout(queueSizes: [size], dataAreaSize: dataAreaSize, features: features)
                regionPlacement = try layout.placement(ofQueue: 0)
            } catch {
                throw InvariantFailure("a valid layout was refused: \(error)")
            }
            if packed {
                let position = PackedPosition(index: Int(cursorByte & 0x7F) % size, wrap: cursorByte & 0x80 != 0)
                regionPlacement.cursor = QueueCursor(
                    nextAvailable: position.cursorValue,
                    nextUsed: position.cursorValue
                )
            } else {
                header = layout
            }
            placement = regionPlacement
            memory = FuzzMemory([(0, layout.regionSize, 0)])
            bufferSpace = [placement.bufferArea ?? 0..<0]
        }
        defer { memory.deallocate() }
        let session = try DeviceSession(
            memory: memory,
            placement: placement,
            header: header,
            features: features,
            capacity: capacity,
            bufferSpace: bufferSpace
        )
        while let op = reader.byte() {
            try session.perform(op, &reader)
        }
        try session.drain()
    }
}

/// One device queue under fuzzing, with the harness's model of what it must do.
final class DeviceSession {
    var queue: DeviceQueue<FuzzMemory, FuzzNotifier>
    let memory: FuzzMemory
    /// Every ring field's bus address, from the core.
    let addresses: SplitRingAddresses
    let size: Int
    let eventIndex: Bool
    let capacity: Int
    /// Where buffers go: the data area, or the buffer mappings in bus order. Descriptors written
    /// by op 7 point near its start, and indirect tables are written into it.
    let bufferSpace: [Range<UInt64>]
    /// The buffer space's size in bytes.
    let bufferSpaceSize: Int
    /// The driver's areas as one address space: descriptor table, available ring (or the
    /// packed ring's two areas), buffer space — op 0's target.
    let driverSpace: [Range<UInt64>]
    /// Its size in bytes.
    let driverSpaceSize: Int
    /// Where every buffer must lie besides in memory, or `nil` for anywhere.
    let bufferArea: Range<UInt64>?
    let reference: ReferenceChainParser

    /// What every byte of every mapping must hold: updated for each harness write and each
    /// write the device is expected to make.
    var shadow: MemoryShadow

    // The model of the device's state.
    var lastAvailable: UInt16
    /// The last `avail.idx` the device read and validated: like the core, the model reads the
    /// index again only once the entries before it are taken.
    var availableShadow: UInt16
    var nextUsed: UInt16
    var lastNotifyCheck: UInt16
    var movesSinceNotifyCheck = 0
    var broken = false
    var heldSegments = 0
    var held: UnsafeMutablePointer<DeviceRequest>
    var heldCount = 0
    var heldHeads: [Bool]

    // The packed ring's model: the device's position, its used position, the list length of
    // every held buffer ID, and where the harness, as the driver, writes its next list.
    let packed: Bool
    var position: PackedPosition
    var usedPosition: PackedPosition
    var driverPosition: PackedPosition
    var listLengths: [Int]
    /// The descriptor count of the list the last ``expectedNext()`` parsed.
    var expectedListLength = 0
    /// Under IN_ORDER (packed): the lists taken and not yet used, in the order taken (a serial
    /// number per take, the buffer ID and the list's descriptor count), and the completions
    /// waiting for the ones before them, by serial (`len`, and whether it was the whole writable
    /// room). Keyed by take, not by buffer ID, as the device keys them by position: once a
    /// request is completed its ID is the driver's to reuse, even while the completion is held,
    /// so two lists taken with one ID are two entries (docs/trust-model.md).
    let inOrder: Bool
    var takenOrder: [(serial: Int, id: UInt16, listLength: Int)] = []
    var heldCompletions: [Int: (length: UInt32, completely: Bool)] = [:]
    /// The serial of each request in `held`, at the same index.
    var heldSerials: [Int] = []
    var nextSerial = 0

    /// Attaches a device: through `header` (this package's region format, written first), or,
    /// without one, through the general initialiser on `placement`, with `avail.idx` and
    /// `used.idx` where a ring resumed at the placement's cursor has them.
    init(
        memory: FuzzMemory,
        placement: QueuePlacement,
        header: RegionLayout?,
        features: Features,
        capacity: Int,
        bufferSpace: [Range<UInt64>]
    ) throws(InvariantFailure) {
        let addresses = SplitRingAddresses(placement)
        let cursor = placement.cursor
        do {
            if let header {
                try header.initialize(memory)
                queue = try DeviceQueue(region: memory, notifier: FuzzNotifier(), segmentCapacity: capacity)
            } else {
                if placement.format == .packed {
                    // A ring resumed at the cursor's position: the descriptors before it used
                    // with its wrap counter, the rest with the other one (last lap's), so
                    // nothing is available yet.
                    let position = PackedPosition(cursorValue: cursor.nextUsed)
                    for index in 0..<placement.size {
                        let flags: UInt16 = (index < position.index) == position.wrap ? 0x8080 : 0
                        memory.pointer(at: addresses.descriptor(index) + 14, count: 2)?
                            .storeBytes(of: flags.littleEndian, as: UInt16.self)
                    }
                } else {
                    for (address, value) in [
                        (addresses.availableIndex, cursor.nextAvailable), (addresses.usedIndex, cursor.nextUsed),
                    ] {
                        memory.pointer(at: address, count: 2)?.storeBytes(of: value.littleEndian, as: UInt16.self)
                    }
                }
                queue = try DeviceQueue(
                    memory: memory,
                    placement: placement,
                    notifier: FuzzNotifier(),
                    features: features,
                    segmentCapacity: capacity
                )
            }
        } catch {
            throw InvariantFailure("attaching a device to fresh memory failed: \(error)")
        }
        self.memory = memory
        self.addresses = addresses
        self.size = placement.size
        self.eventIndex = features.contains(.eventIndex)
        self.capacity = capacity
        self.bufferSpace = bufferSpace
        self.bufferSpaceSize = bufferSpace.reduce(0) { $0 + $1.count }
        let areas = placement.areas
        self.driverSpace = [areas[0].range, areas[1].range] + bufferSpace
        self.driverSpaceSize = driverSpace.reduce(0) { $0 + $1.count }
        self.bufferArea = placement.bufferArea
        self.reference = ReferenceChainParser(
            memory: memory,
            addresses: addresses,
            bufferArea: placement.bufferArea,
            indirectNegotiated: features.contains(.indirectDescriptors)
        )
        self.shadow = MemoryShadow(memory)
        self.lastAvailable = cursor.nextAvailable
        self.availableShadow = cursor.nextAvailable
        self.nextUsed = cursor.nextUsed
        self.lastNotifyCheck = cursor.nextUsed
        self.held = .allocate(capacity: placement.size)
        self.heldHeads = Array(repeating: false, count: placement.size)
        self.packed = placement.format == .packed
        self.position = PackedPosition(cursorValue: cursor.nextAvailable)
        self.usedPosition = PackedPosition(cursorValue: cursor.nextUsed)
        self.driverPosition = position
        self.listLengths = Array(repeating: 0, count: placement.size)
        self.inOrder = features.contains(.inOrder)
    }

    deinit {
        held.deinitialize(count: heldCount)
        held.deallocate()
    }

    // MARK: The hostile driver's writes

    /// Writes `bytes` at bus address `address` (bytes that fall in a gap are dropped).
    func write(_ bytes: UnsafeRawBufferPointer, at address: UInt64) {
        memory.forEachPiece(at: address, count: bytes.count) { piece in
            (memory.mappings[piece.mapping].region.base + piece.offset)
                .copyMemory(from: bytes.baseAddress! + piece.source, byteCount: piece.count)
            shadow.set(piece, from: bytes)
        }
    }

    /// Records bytes the device is expected to write at `address`.
    func setShadow(_ bytes: UnsafeRawBufferPointer, at address: UInt64) {
        memory.forEachPiece(at: address, count: bytes.count) { piece in
            shadow.set(piece, from: bytes)
        }
    }

    func setShadow<T: FixedWidthInteger>(_ value: T, at address: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { setShadow($0, at: address) }
    }

    func write16(_ value: UInt16, at address: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { write($0, at: address) }
    }

    func load16(_ address: UInt64) -> UInt16 { memory.load16(address) }

    /// Writes `bytes` at `spaceOffset` of `space`, a list of bus ranges taken as one.
    func write(space: [Range<UInt64>], offset spaceOffset: Int, _ bytes: UnsafeRawBufferPointer) {
        var remaining = bytes
        var position = spaceOffset
        for area in space where !remaining.isEmpty {
            if position >= area.count {
                position -= area.count
                continue
            }
            let count = min(area.count - position, remaining.count)
            write(UnsafeRawBufferPointer(rebasing: remaining[0..<count]), at: area.lowerBound + UInt64(position))
            remaining = UnsafeRawBufferPointer(rebasing: remaining[count...])
            position = 0
        }
    }

    // MARK: Operations

    func perform(_ op: UInt8, _ reader: inout FuzzInput) throws(InvariantFailure) {
        if packed, performPacked(op, &reader) {
            try checkMemory()
            return
        }
        switch op % 10 {
        case 0:
            let offset = Int(reader.uint16()) % driverSpaceSize
            let count = Int(reader.byteOrZero())
            write(space: driverSpace, offset: offset, reader.bytes(upTo: count))
        case 1:
            write16(reader.uint16(), at: addresses.availableIndex)
        case 2:
            let index = load16(addresses.availableIndex)
            write16(index &+ UInt16(Int(reader.byteOrZero()) % (size + 2)), at: addresses.availableIndex)
        case 3:
            for _ in 0...(reader.byteOrZero() % 4) {
                guard try take() else { break }
            }
        case 4:
            try complete(selector: reader.byteOrZero(), length: reader.byteOrZero())
        case 5:
            try notify()
        case 6:
            try wait(spins: Int(reader.byteOrZero() % 3))
        case 7:
            let target = reader.byteOrZero()
            let address = bufferSpace[0].lowerBound &+ UInt64(reader.uint16()) &- 64
            let length = UInt32(reader.uint16())
            let flags = UInt16(reader.byteOrZero())
            let next = UInt16(reader.byteOrZero())
            var descriptor = [UInt8](repeating: 0, count: 16)
            descriptor.withUnsafeMutableBytes { raw in
                raw.storeBytes(of: address.littleEndian, toByteOffset: 0, as: UInt64.self)
                raw.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
                raw.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
                raw.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
            }
            if target & 0x80 != 0 {
                // An entry of an indirect table in the buffer space (across mappings, maybe).
                let offset = (Int(target & 0x7F) * 16) % (bufferSpaceSize - 15)
                descriptor.withUnsafeBytes { write(space: bufferSpace, offset: offset, $0) }
            } else {
                descriptor.withUnsafeBytes { write($0, at: addresses.descriptor(Int(target) % size)) }
            }
        case 8:
            let slot = Int(reader.byteOrZero()) % size
            write16(UInt16(reader.byteOrZero()), at: addresses.availableEntry(slot: slot))
        default:
            write16(reader.uint16(), at: addresses.availableFlags)
            write16(reader.uint16(), at: addresses.usedEvent)
        }
        try checkMemory()
    }

    /// Calls `nextRequest()` once and checks the outcome against the reference parser.
    /// - Returns: Whether a request was taken.
    func take() throws(InvariantFailure) -> Bool {
        let expected = expectedNext()
        let taken: DeviceRequest?
        do {
            taken = try queue.nextRequest()
        } catch {
            try checkRefusal(error, expected: expected)
            return false
        }
        guard let request = taken else {
            guard case .empty = expected else {
                throw InvariantFailure("nextRequest returned nil where \(expected) was expected")
            }
            return false
        }
        guard case .chain(let head, .valid(let segments)) = expected else {
            throw InvariantFailure("nextRequest returned request \(request.id) where \(expected) was expected")
        }
        try check(
            segments.count <= capacity - heldSegments,
            "a chain of \(segments.count) segments was taken with \(capacity - heldSegments) free"
        )
        try check(request.id == head, "request id \(request.id) is not the ring's head \(head)")
        try checkSegments(of: request, expected: segments)
        if packed {
            position.advance(by: expectedListLength, size: size)
            listLengths[Int(head)] = expectedListLength
            if inOrder { takenOrder.append((nextSerial, head, expectedListLength)) }
        } else {
            lastAvailable &+= 1
        }
        heldSegments += segments.count
        heldHeads[Int(head)] = true
        held.advanced(by: heldCount).initialize(to: request)
        heldCount += 1
        heldSerials.append(nextSerial)
        nextSerial += 1
        return true
    }

    /// Checks an error from `nextRequest()` against what the reference expected.
    func checkRefusal(_ error: VirtqueueError, expected: Expected) throws(InvariantFailure) {
        switch expected {
        case .broken:
            try check(error.code == .queueBroken, "a broken queue reported \(error) instead of queueBroken")
        case .empty:
            throw InvariantFailure("an empty ring reported \(error)")
        case .violation(let why, let codes), .chain(_, .invalid(let why, let codes)):
            if error.code == .segmentStoreExhausted, case .chain = expected {
                // The store ran out on a segment before the parser reached the violation.
                try check(!queue.isBroken, "segmentStoreExhausted broke the queue: \(error)")
                return
            }
            try check(error.isPeerViolation, "a malformed ring (\(why)) reported \(error), not a peer violation")
            try check(
                codes.contains(error.code),
                "a malformed ring (\(why)) reported \(error), expected one of \(codes)"
            )
            try check(queue.isBroken, "the queue is not broken after \(error)")
            broken = true
        case .chain(_, .valid(let segments)):
            try check(
                error.code == .segmentStoreExhausted && segments.count > capacity - heldSegments,
                "a valid chain of \(segments.count) segments (\(capacity - heldSegments) free) was refused: \(error)"
            )
            try check(!queue.isBroken, "segmentStoreExhausted broke the queue: \(error)")
        }
    }

    enum Expected: CustomStringConvertible {
        case broken
        case empty
        case violation(String, [VirtqueueError.Code])
        case chain(UInt16, ReferenceChainParser.Outcome)

        var description: String {
            switch self {
            case .broken: "queueBroken"
            case .empty: "nil"
            case .violation(let why, _): "a violation (\(why))"
            case .chain(let head, let outcome): "head \(head): \(outcome)"
            }
        }
    }

    func expectedNext() -> Expected {
        if broken { return .broken }
        if packed {
            let room = size - position.steps(after: usedPosition, size: size)
            switch reference.parsePacked(index: position.index, wrap: position.wrap, held: heldHeads, room: room) {
            case .empty: return .empty
            case .violation(let why, let codes): return .violation(why, codes)
            case .list(let id, let count, let outcome):
                expectedListLength = count
                return .chain(id, outcome)
            }
        }
        if availableShadow == lastAvailable {
            let index = load16(addresses.availableIndex)
            if index == lastAvailable { return .empty }
            let pending = Int(index &- lastAvailable)
            if pending > size { return .violation("avail.idx jumped by \(pending)", [.availableIndexJump]) }
            availableShadow = index
        }
        let head = load16(addresses.availableEntry(slot: Int(lastAvailable)))
        if Int(head) >= size { return .violation("head \(head) out of range", [.headOutOfRange]) }
        if heldHeads[Int(head)] { return .violation("head \(head) is already held", [.headAlreadyInFlight]) }
        return .chain(head, reference.parse(head: Int(head)))
    }

    /// Checks a request's segments against the reference: each view's host address is traced
    /// back, through the harness's own table of mappings, to a mapping and a bus address, which
    /// must lie in the buffer area; reads every readable byte and fills every writable one
    /// (mirroring the fill in the shadow).
    func checkSegments(
        of request: borrowing DeviceRequest,
        expected: [ReferenceChainParser.Segment]
    ) throws(InvariantFailure) {
        var seen: [ReferenceChainParser.Segment] = []
        seen.reserveCapacity(expected.count)
        var outside: String?
        var checksum: UInt8 = 0
        let memory = self.memory
        let bufferArea = self.bufferArea
        func trace(_ start: UnsafeRawPointer, _ count: Int, writable: Bool) -> (mapping: Int, offset: Int)? {
            guard let (mapping, address) = memory.locate(start, count: count) else {
                outside = "\(writable ? "writable" : "readable") \(start) +\(count) is in no mapping"
                return nil
            }
            if let area = bufferArea, !(address >= area.lowerBound && area.upperBound - address >= UInt64(count)) {
                outside = "bus 0x\(String(address, radix: 16)) +\(count) is outside the buffer area"
                return nil
            }
            seen.append(.init(address: address, length: UInt32(count), writable: writable))
            return (mapping, Int(address - memory.mappings[mapping].bus))
        }
        let fill = 0xE0 | UInt8(request.id & 0x0F)
        do {
            try queue.forEachReadable(in: request) { bytes in
                let start = bytes.baseAddress ?? UnsafeRawPointer(memory.mappings[0].region.base)
                _ = trace(start, bytes.count, writable: false)
                for byte in bytes { checksum &+= byte }
            }
            try queue.forEachWritable(in: request) { bytes in
                let start = UnsafeRawPointer(bytes.baseAddress ?? memory.mappings[0].region.base)
                guard let (mapping, offset) = trace(start, bytes.count, writable: true) else { return }
                bytes.initializeMemory(as: UInt8.self, repeating: fill)
                shadow.fill(mapping: mapping, offset: offset, count: bytes.count, with: fill)
            }
        } catch {
            throw InvariantFailure("viewing the segments of own request \(request.id) failed: \(error)")
        }
        _ = checksum
        if let outside {
            throw InvariantFailure("request \(request.id) has a segment outside the buffers: \(outside)")
        }
        try check(seen == expected, "request \(request.id) segments \(seen) differ from the reference \(expected)")
        try check(request.segmentCount == expected.count, "segmentCount \(request.segmentCount) != \(expected.count)")
        var readable = 0
        var writable = 0
        for segment in expected {
            if segment.writable { writable += Int(segment.length) } else { readable += Int(segment.length) }
        }
        try check(
            request.readableByteCount == readable && request.writableByteCount == writable,
            "request \(request.id) counts \(request.readableByteCount)/\(request.writableByteCount) != \(readable)/\(writable)"
        )
    }

    /// Completes held request `selector % heldCount` with a length chosen by `length`.
    func complete(selector: UInt8, length: UInt8) throws(InvariantFailure) {
        guard heldCount > 0 else { return }
        let index = Int(selector) % heldCount
        let request = held.advanced(by: index).move()
        heldCount -= 1
        if index != heldCount {
            held.advanced(by: index).initialize(to: held.advanced(by: heldCount).move())
        }
        let serial = heldSerials[index]
        heldSerials[index] = heldSerials[heldCount]
        heldSerials.removeLast()
        let writable = request.writableByteCount
        let written: Int
        switch length >> 6 {
        case 0: written = writable
        case 1: written = Int(length & 0x3F) % (writable + 1)
        case 2: written = writable + 1 + Int(length & 0x3F)
        default: written = -1 - Int(length & 0x3F)
        }
        let id = request.id
        heldHeads[Int(id)] = false
        heldSegments -= request.segmentCount
        var thrown: VirtqueueError?
        do {
            try queue.complete(request, written: written)
        } catch {
            thrown = error
        }
        if broken {
            try check(
                thrown?.code == .queueBroken,
                "completing on a broken queue reported \(String(describing: thrown))"
            )
            return
        }
        let valid = written >= 0 && written <= writable
        if valid {
            try check(
                thrown == nil,
                "completing \(id) with \(written) of \(writable) failed: \(String(describing: thrown))"
            )
        } else {
            try check(
                thrown?.code == .writtenLengthTooLarge,
                "written \(written) of \(writable) reported \(String(describing: thrown))"
            )
            try check(!queue.isBroken, "a caller's bad length broke the queue")
        }
        if packed && inOrder {
            useInOrder(serial: serial, length: UInt32(valid ? written : 0), writable: writable)
            return
        }
        if packed {
            // The used descriptor: `len`, `id`, then `flags` — WRITE if any byte was written,
            // AVAIL = USED = the wrap counter at the used position; `addr` is left alone.
            let descriptor = addresses.descriptor(usedPosition.index)
            let length = UInt32(valid ? written : 0)
            setShadow(length, at: descriptor + 8)
            setShadow(id, at: descriptor + 12)
            setShadow((usedPosition.wrap ? 0x8080 : 0) | (length > 0 ? 2 : 0) as UInt16, at: descriptor + 14)
            usedPosition.advance(by: listLengths[Int(id)], size: size)
            movesSinceNotifyCheck += listLengths[Int(id)]
            return
        }
        // The used element `{le32 id, le32 len}`.
        let element = addresses.usedElement(slot: Int(nextUsed))
        setShadow(UInt32(id), at: element)
        setShadow(UInt32(valid ? written : 0), at: element + 4)
        nextUsed &+= 1
        movesSinceNotifyCheck += 1
        setShadow(nextUsed, at: addresses.usedIndex)
    }

    func notify() throws(InvariantFailure) {
        let result = Result { () throws(VirtqueueError) in try queue.notifyIfNeeded() }
        if packed {
            try checkPackedNotification(
                result,
                broken: broken,
                new: usedPosition,
                moves: &movesSinceNotifyCheck,
                size: size,
                event: addresses.placement.driverArea,
                in: memory
            )
            return
        }
        let new = nextUsed
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
                peerEvent: load16(addresses.usedEvent),
                peerFlags: load16(addresses.availableFlags)
            ),
            old: old,
            new: new
        )
    }

    func wait(spins: Int) throws(InvariantFailure) {
        var thrown: VirtqueueError?
        do {
            try queue.waitForRequests(spins: spins)
        } catch {
            thrown = error
        }
        if broken {
            try check(thrown?.code == .queueBroken, "waiting on a broken queue reported \(String(describing: thrown))")
            return
        }
        let ready =
            packed
            ? load16(addresses.descriptor(position.index) + 14) & 0x80 == (position.wrap ? 0x80 : 0)
            : load16(addresses.availableIndex) != lastAvailable
        if ready && spins > 0 {
            try check(thrown == nil, "waiting with a request ready failed: \(String(describing: thrown))")
            return
        }
        if packed {
            try checkPackedWait(ready: ready, thrown: thrown)
            return
        }
        // The device asks to be kicked: avail_event (EVENT_IDX) or used.flags = 0.
        if eventIndex {
            setShadow(lastAvailable, at: addresses.availableEvent)
        } else {
            setShadow(UInt16(0), at: addresses.usedFlags)
        }
        if ready {
            try check(thrown == nil, "waiting with a request ready failed: \(String(describing: thrown))")
            if !eventIndex { setShadow(UInt16(1), at: addresses.usedFlags) }
        } else {
            try check(thrown?.code == .peerDied, "a wait with no peer reported \(String(describing: thrown))")
            try check(queue.isBroken, "the queue is not broken after its peer died")
            broken = true
        }
    }

    /// Completes every held request, then takes and completes until the ring is empty or broken.
    func drain() throws(InvariantFailure) {
        while heldCount > 0 {
            try complete(selector: 0, length: 0)
            try checkMemory()
        }
        for _ in 0..<(2 * size + 2) {
            guard try take() else { break }
            try complete(selector: 0, length: 0)
            try checkMemory()
        }
        try checkMemory()
        if broken {
            try check(!(try take()), "a broken queue handed out a request")
        }
    }

    /// Every byte of every mapping must equal the shadow, and the canaries must be intact.
    func checkMemory() throws(InvariantFailure) {
        try memory.checkCanaries()
        for (index, mapping) in memory.mappings.enumerated() {
            if let (offset, actual) = shadow.firstDifference(
                in: memory,
                mapping: index,
                offsets: 0..<mapping.region.count
            ) {
                throw InvariantFailure(
                    "byte at bus 0x\(String(mapping.bus + UInt64(offset), radix: 16)) (mapping \(index)) is \(actual), expected \(shadow.bytes[index][offset]) (used ring at 0x\(String(addresses.placement.deviceArea, radix: 16)))"
                )
            }
        }
    }
}
