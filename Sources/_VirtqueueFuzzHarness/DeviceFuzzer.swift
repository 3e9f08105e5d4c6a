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
/// EVENT_IDX, the device's segment capacity and the data area's size. The rest is a program
/// of operations, each one byte followed by its operands, played against one `DeviceQueue`:
///
/// | op % 10 | operation |
/// |---|---|
/// | 0 | write up to 255 raw bytes anywhere in the driver's areas (descriptor table, available ring, data area) |
/// | 1 | set `avail.idx` |
/// | 2 | advance `avail.idx` by 0…N+1 |
/// | 3 | call `nextRequest()` up to 4 times |
/// | 4 | complete a held request with an in-range or out-of-range length |
/// | 5 | call `notifyIfNeeded()` |
/// | 6 | call `waitForRequests(spins:)` (a wait ends as if the driver died) |
/// | 7 | write one descriptor, addressed near the data area, into the table or an indirect table |
/// | 8 | write one available-ring entry |
/// | 9 | write `avail.flags` and `used_event` |
///
/// At the end every held request is completed and the ring is drained. After each operation
/// the harness checks that: every request matches an independent parser
/// (``ReferenceChainParser``) segment for segment, and every segment lies inside the data area;
/// every error is typed and a peer violation breaks the queue for good; the used ring holds
/// exactly what was completed; nothing outside the used ring, the writable segments and the
/// notification fields changed; and the canaries around the region are intact.
public enum DeviceFuzzer {
    /// Runs one input.
    ///
    /// - Throws: ``InvariantFailure`` naming the broken invariant.
    public static func run(_ input: UnsafeRawBufferPointer) throws(InvariantFailure) {
        var reader = FuzzInput(input)
        let config = reader.byteOrZero()
        let size = [4, 8, 16, 1][Int(config & 3)]
        var features: Features = []
        if config & 4 != 0 { features.insert(.indirectDescriptors) }
        if config & 8 != 0 { features.insert(.eventIndex) }
        let capacity = [size, 2 * size, 4 * size, size * size + size][Int(config >> 4) & 3]
        let dataAreaSize = [128, 256, 1024, 4096][Int(config >> 6) & 3]
        let layout: RegionLayout
        do {
            layout = try RegionLayout(queueSizes: [size], dataAreaSize: dataAreaSize, features: features)
        } catch {
            throw InvariantFailure("a valid layout was refused: \(error)")
        }
        let region = FuzzRegion(count: layout.regionSize)
        defer { region.deallocate() }
        let session = try DeviceSession(layout: layout, region: region, capacity: capacity)
        while let op = reader.byte() {
            try session.perform(op, &reader)
        }
        try session.drain()
    }
}

/// One device queue under fuzzing, with the harness's model of what it must do.
final class DeviceSession {
    var queue: DeviceQueue<FuzzRegion, FuzzNotifier>
    let region: FuzzRegion
    let size: Int
    let eventIndex: Bool
    let capacity: Int
    let descriptorTable: Int
    let availableRing: Int
    let usedRing: Int
    let dataArea: Range<Int>
    let reference: ReferenceChainParser

    /// What every byte of the region must hold: updated for each harness write and each
    /// write the device is expected to make.
    var shadow: [UInt8]

    // The model of the device's state.
    var lastAvailable: UInt16 = 0
    /// The last `avail.idx` the device read and validated: like the core, the model reads the
    /// index again only once the entries before it are taken.
    var availableShadow: UInt16 = 0
    var nextUsed: UInt16 = 0
    var lastNotifyCheck: UInt16 = 0
    var movesSinceNotifyCheck = 0
    var broken = false
    var heldSegments = 0
    var held: UnsafeMutablePointer<DeviceRequest>
    var heldCount = 0
    var heldHeads: [Bool]

    init(layout: RegionLayout, region: FuzzRegion, capacity: Int) throws(InvariantFailure) {
        do {
            try layout.initialize(region)
            queue = try DeviceQueue(region: region, notifier: FuzzNotifier(), segmentCapacity: capacity)
        } catch {
            throw InvariantFailure("attaching a device to a fresh region failed: \(error)")
        }
        let queueLayout = layout.queues[0]
        self.region = region
        self.size = queueLayout.size
        self.eventIndex = layout.features.contains(.eventIndex)
        self.capacity = capacity
        self.descriptorTable = queueLayout.descriptorTableOffset
        self.availableRing = queueLayout.availableRingOffset
        self.usedRing = queueLayout.usedRingOffset
        self.dataArea = layout.dataAreaOffset..<layout.dataAreaOffset + layout.dataAreaSize
        self.reference = ReferenceChainParser(
            bytes: UnsafeRawBufferPointer(region.bytes),
            queueSize: queueLayout.size,
            descriptorTable: queueLayout.descriptorTableOffset,
            dataArea: UInt64(dataArea.lowerBound)..<UInt64(dataArea.upperBound),
            indirectNegotiated: layout.features.contains(.indirectDescriptors)
        )
        self.shadow = Array(UnsafeRawBufferPointer(region.bytes))
        self.held = .allocate(capacity: queueLayout.size)
        self.heldHeads = Array(repeating: false, count: queueLayout.size)
    }

    deinit {
        held.deinitialize(count: heldCount)
        held.deallocate()
    }

    // MARK: The hostile driver's writes

    /// The driver's areas as one address space: descriptor table, available ring, data area.
    var driverSpace: [Range<Int>] {
        [
            descriptorTable..<descriptorTable + 16 * size,
            availableRing..<availableRing + 6 + 2 * size,
            dataArea,
        ]
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        (region.base + offset).copyMemory(from: source, byteCount: bytes.count)
        setShadow(bytes, at: offset)
    }

    func setShadow(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        shadow.withUnsafeMutableBytes { ($0.baseAddress! + offset).copyMemory(from: source, byteCount: bytes.count) }
    }

    func write16(_ value: UInt16, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { write($0, at: offset) }
    }

    func load16(_ offset: Int) -> UInt16 {
        UInt16(
            littleEndian: UnsafeRawBufferPointer(region.bytes).loadUnaligned(fromByteOffset: offset, as: UInt16.self)
        )
    }

    func writeRaw(spaceOffset: Int, _ bytes: UnsafeRawBufferPointer) {
        var remaining = bytes
        var position = spaceOffset
        for area in driverSpace where !remaining.isEmpty {
            if position >= area.count {
                position -= area.count
                continue
            }
            let count = min(area.count - position, remaining.count)
            write(UnsafeRawBufferPointer(rebasing: remaining[0..<count]), at: area.lowerBound + position)
            remaining = UnsafeRawBufferPointer(rebasing: remaining[count...])
            position = 0
        }
    }

    // MARK: Operations

    func perform(_ op: UInt8, _ reader: inout FuzzInput) throws(InvariantFailure) {
        switch op % 10 {
        case 0:
            let spaceSize = driverSpace.reduce(0) { $0 + $1.count }
            let offset = Int(reader.uint16()) % spaceSize
            let count = Int(reader.byteOrZero())
            writeRaw(spaceOffset: offset, reader.bytes(upTo: count))
        case 1:
            write16(reader.uint16(), at: availableRing + 2)
        case 2:
            write16(load16(availableRing + 2) &+ UInt16(Int(reader.byteOrZero()) % (size + 2)), at: availableRing + 2)
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
            let address = UInt64(dataArea.lowerBound) &+ UInt64(reader.uint16()) &- 64
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
            let offset: Int
            if target & 0x80 != 0 {
                // An entry of an indirect table in the data area.
                offset = dataArea.lowerBound + (Int(target & 0x7F) * 16) % (dataArea.count - 15)
            } else {
                offset = descriptorTable + 16 * (Int(target) % size)
            }
            descriptor.withUnsafeBytes { write($0, at: offset) }
        case 8:
            let slot = Int(reader.byteOrZero()) % size
            write16(UInt16(reader.byteOrZero()), at: availableRing + 4 + 2 * slot)
        default:
            write16(reader.uint16(), at: availableRing)
            write16(reader.uint16(), at: availableRing + 4 + 2 * size)
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
        lastAvailable &+= 1
        heldSegments += segments.count
        heldHeads[Int(head)] = true
        held.advanced(by: heldCount).initialize(to: request)
        heldCount += 1
        return true
    }

    /// Checks an error from `nextRequest()` against what the reference expected.
    func checkRefusal(_ error: VirtqueueError, expected: Expected) throws(InvariantFailure) {
        switch expected {
        case .broken:
            try check(error.code == .queueBroken, "a broken queue reported \(error) instead of queueBroken")
        case .empty:
            throw InvariantFailure("an empty ring reported \(error)")
        case .violation(let why), .chain(_, .invalid(let why)):
            if error.code == .segmentStoreExhausted {
                try check(!queue.isBroken, "segmentStoreExhausted broke the queue: \(error)")
                return
            }
            try check(error.isPeerViolation, "a malformed ring (\(why)) reported \(error), not a peer violation")
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
        case violation(String)
        case chain(UInt16, ReferenceChainParser.Outcome)

        var description: String {
            switch self {
            case .broken: "queueBroken"
            case .empty: "nil"
            case .violation(let why): "a violation (\(why))"
            case .chain(let head, let outcome): "head \(head): \(outcome)"
            }
        }
    }

    func expectedNext() -> Expected {
        if broken { return .broken }
        if availableShadow == lastAvailable {
            let index = load16(availableRing + 2)
            if index == lastAvailable { return .empty }
            let pending = Int(index &- lastAvailable)
            if pending > size { return .violation("avail.idx jumped by \(pending)") }
            availableShadow = index
        }
        let head = load16(availableRing + 4 + 2 * Int(lastAvailable % UInt16(size)))
        if Int(head) >= size { return .violation("head \(head) out of range") }
        if heldHeads[Int(head)] { return .violation("head \(head) is already held") }
        return .chain(head, reference.parse(head: Int(head)))
    }

    /// Checks a request's segments against the reference, checks each lies in the data area,
    /// reads every readable byte and fills every writable one (mirroring the fill in the shadow).
    func checkSegments(
        of request: borrowing DeviceRequest,
        expected: [ReferenceChainParser.Segment]
    ) throws(InvariantFailure) {
        var seen: [ReferenceChainParser.Segment] = []
        var outside: String?
        var checksum: UInt8 = 0
        queue.forEachReadable(in: request) { bytes in
            let start = bytes.baseAddress ?? UnsafeRawPointer(region.base)
            if !region.contains(start, count: bytes.count, in: dataArea) {
                outside = "readable \(start) +\(bytes.count)"
            }
            seen.append(
                .init(
                    offset: UInt64(start - UnsafeRawPointer(region.base)),
                    length: UInt32(bytes.count),
                    writable: false
                )
            )
            for byte in bytes { checksum &+= byte }
        }
        let fill = 0xE0 | UInt8(request.id & 0x0F)
        queue.forEachWritable(in: request) { bytes in
            let start = UnsafeRawPointer(bytes.baseAddress ?? region.base)
            if !region.contains(start, count: bytes.count, in: dataArea) {
                outside = "writable \(start) +\(bytes.count)"
                return
            }
            let offset = start - UnsafeRawPointer(region.base)
            seen.append(.init(offset: UInt64(offset), length: UInt32(bytes.count), writable: true))
            bytes.initializeMemory(as: UInt8.self, repeating: fill)
            shadow.withUnsafeMutableBytes {
                _ = UnsafeMutableRawBufferPointer(rebasing: $0[offset..<offset + bytes.count])
                    .initializeMemory(as: UInt8.self, repeating: fill)
            }
        }
        _ = checksum
        if let outside {
            throw InvariantFailure("request \(request.id) has a segment outside the data area: \(outside)")
        }
        try check(seen == expected, "request \(request.id) segments \(seen) differ from the reference \(expected)")
        try check(request.segmentCount == expected.count, "segmentCount \(request.segmentCount) != \(expected.count)")
        let readable = expected.filter { !$0.writable }.reduce(0) { $0 + Int($1.length) }
        let writable = expected.filter { $0.writable }.reduce(0) { $0 + Int($1.length) }
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
        let slot = usedRing + 4 + 8 * Int(nextUsed % UInt16(size))
        withUnsafeBytes(of: UInt32(id).littleEndian) { setShadow($0, at: slot) }
        withUnsafeBytes(of: UInt32(valid ? written : 0).littleEndian) { setShadow($0, at: slot + 4) }
        nextUsed &+= 1
        movesSinceNotifyCheck += 1
        withUnsafeBytes(of: nextUsed.littleEndian) { setShadow($0, at: usedRing + 2) }
    }

    func notify() throws(InvariantFailure) {
        let result = Result { () throws(VirtqueueError) in try queue.notifyIfNeeded() }
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
                peerEvent: load16(availableRing + 4 + 2 * size),
                peerFlags: load16(availableRing)
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
        let ready = load16(availableRing + 2) != lastAvailable
        if ready && spins > 0 {
            try check(thrown == nil, "waiting with a request ready failed: \(String(describing: thrown))")
            return
        }
        // The device asks to be kicked: avail_event (EVENT_IDX) or used.flags = 0.
        if eventIndex {
            withUnsafeBytes(of: lastAvailable.littleEndian) { setShadow($0, at: usedRing + 4 + 8 * size) }
        } else {
            shadow[usedRing] = 0
            shadow[usedRing + 1] = 0
        }
        if ready {
            try check(thrown == nil, "waiting with a request ready failed: \(String(describing: thrown))")
            if !eventIndex { shadow[usedRing] = 1 }
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

    /// Every byte of the region must equal the shadow, and the canaries must be intact.
    func checkMemory() throws(InvariantFailure) {
        try region.checkCanaries()
        let actual = UnsafeRawBufferPointer(region.bytes)
        let same = shadow.withUnsafeBytes { memcmp($0.baseAddress!, region.base, region.count) == 0 }
        if !same, let index = actual.indices.first(where: { actual[$0] != shadow[$0] }) {
            throw InvariantFailure(
                "region byte \(index) is \(actual[index]), expected \(shadow[index]) (used ring at \(usedRing), data area \(dataArea))"
            )
        }
    }
}
