import Testing
import Virtqueue
import VirtqueueHeap

/// Guest memory of several mappings (docs/trust-model.md, "Addresses"): rings in one mapping,
/// buffers in others, gaps between them, and every hostile address class.
@Suite("Guest memory of several mappings")
struct GuestMemoryTests {
    /// Rings at 0x1000; buffers at 0x10000 and 0x20000, with a gap between; 0x30000 adjacent to
    /// 0x31000 (for spans).
    static func memory() throws -> HeapGuestMemory {
        try HeapGuestMemory(mappings: [
            (busAddress: 0x1000, byteCount: 0x1000),
            (busAddress: 0x1_0000, byteCount: 0x4000),
            (busAddress: 0x2_0000, byteCount: 0x4000),
            (busAddress: 0x3_0000, byteCount: 0x1000),
            (busAddress: 0x3_1000, byteCount: 0x1000),
        ])
    }

    static let size = 8

    static func placement(bufferArea: Range<UInt64>? = nil, cursor: QueueCursor = .start) -> QueuePlacement {
        QueuePlacement(
            size: size,
            descriptorArea: 0x1000,
            driverArea: 0x1100,
            deviceArea: 0x1200,
            cursor: cursor,
            bufferArea: bufferArea
        )
    }

    static let features: Features = [.version1, .indirectDescriptors]

    /// Plays a hostile (or simply foreign) driver: writes descriptors and makes heads available,
    /// at the addresses the ring core gives.
    struct RawDriver {
        let memory: HeapGuestMemory
        let fields: SplitRingAddresses
        var next: UInt16 = 0

        init(_ memory: HeapGuestMemory, _ placement: QueuePlacement) {
            self.memory = memory
            self.fields = SplitRingAddresses(placement)
            self.next = placement.cursor.nextAvailable
        }

        func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws {
            try memory.withBytes(at: address, count: MemoryLayout<T>.size) { raw in
                raw.storeBytes(of: value.littleEndian, as: T.self)
            }
        }

        func descriptor(at address: UInt64, buffer: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0)
            throws
        {
            try store(buffer, at: address)
            try store(length, at: address + 8)
            try store(flags, at: address + 12)
            try store(next, at: address + 14)
        }

        func descriptor(_ index: Int, buffer: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0) throws {
            try descriptor(at: fields.descriptor(index), buffer: buffer, length: length, flags: flags, next: next)
        }

        mutating func makeAvailable(head: UInt16) throws {
            try store(head, at: fields.availableEntry(slot: Int(next)))
            next &+= 1
            try store(next, at: fields.availableIndex)
        }

        func used(slot: Int) throws -> (id: UInt32, length: UInt32) {
            let address = fields.usedElement(slot: slot)
            let id = try memory.withBytes(at: address, count: 8) { UInt32(littleEndian: $0.load(as: UInt32.self)) }
            let length = try memory.withBytes(at: address + 4, count: 4) {
                UInt32(littleEndian: $0.load(as: UInt32.self))
            }
            return (id, length)
        }
    }

    func makeDevice(
        _ memory: HeapGuestMemory,
        _ placement: QueuePlacement = GuestMemoryTests.placement()
    ) throws -> DeviceQueue<HeapGuestMemory, HeapNotifier> {
        try DeviceQueue(
            memory: memory,
            placement: placement,
            notifier: HeapNotifier.makePair().device,
            features: Self.features
        )
    }

    // MARK: Rings and buffers in different mappings

    @Test func ringsInOneMappingBuffersInOthersRoundTrip() throws {
        let memory = try Self.memory()
        let notifiers = HeapNotifier.makePair()
        var driver = try DriverQueue(
            memory: memory,
            placement: Self.placement(),
            notifier: notifiers.driver,
            features: Self.features,
            pool: 0x2_0000..<0x2_4000,
            bufferSize: 256
        )
        var device = try DeviceQueue(
            memory: memory,
            placement: Self.placement(),
            notifier: notifiers.device,
            features: Self.features
        )
        let bufferCount = driver.bufferCount
        #expect(bufferCount == 0x4000 / 256)
        for round in 0..<3 * Self.size {
            var chain = driver.makeChain()
            try driver.appendReadable(to: &chain, copying: Array("message \(round)".utf8))
            try driver.appendWritable(to: &chain, capacity: 64)
            try driver.submit(chain)
            let request = try device.requireRequest()
            var text = [UInt8](repeating: 0, count: request.readableByteCount)
            _ = try text.withUnsafeMutableBytes { try device.gather(request, into: $0) }
            let reply = Array("reply to \(String(decoding: text, as: UTF8.self))".utf8)
            let written = try reply.withUnsafeBytes { try device.scatter($0, into: request) }
            try device.complete(request, written: written)
            let used = try driver.requireUsed()
            var received = [UInt8](repeating: 0, count: used.writtenByteCount)
            _ = try received.withUnsafeMutableBytes { try driver.copyWrittenBytes(of: used, into: $0) }
            #expect(String(decoding: received, as: UTF8.self) == "reply to message \(round)")
            try driver.free(used)
        }
        let (free, all) = (driver.freeBufferCount, driver.bufferCount)
        #expect(free == all)
    }

    @Test func aPoolSlotThatStraddlesTwoMappingsIsLeftOut() throws {
        let memory = try Self.memory()
        // 0x30000..<0x32000 is two adjacent mappings; slots of 0x300 bytes: the one at 0x30f00
        // straddles 0x31000, and the last one would run past 0x32000.
        let driver = try DriverQueue(
            memory: memory,
            placement: Self.placement(),
            notifier: HeapNotifier.makePair().driver,
            features: Self.features,
            pool: 0x3_0000..<0x3_2000,
            bufferSize: 0x300
        )
        let (free, all) = (driver.freeBufferCount, driver.bufferCount)
        #expect(all == 0x2000 / 0x300 - 1)
        #expect(free == all)
    }

    // MARK: A buffer spanning adjacent mappings

    @Test func aBufferSpanningTwoAdjacentMappingsIsTwoSegmentsReadBackIntact() throws {
        let memory = try Self.memory()
        var raw = RawDriver(memory, Self.placement())
        let readable = (0..<0x200).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        // 0x30f00..<0x31100 crosses from the mapping at 0x30000 into the one at 0x31000.
        try memory.withBytes(at: 0x3_0F00, count: 0x100) { $0.copyBytes(from: readable[0..<0x100]) }
        try memory.withBytes(at: 0x3_1000, count: 0x100) { $0.copyBytes(from: readable[0x100...]) }
        try raw.descriptor(0, buffer: 0x3_0F00, length: 0x200, flags: 1, next: 1)
        try raw.descriptor(1, buffer: 0x3_0FF0, length: 0x20, flags: 2)
        try raw.makeAvailable(head: 0)
        var device = try makeDevice(memory)
        let request = try device.requireRequest()
        #expect(request.segmentCount == 4)
        #expect(request.readableByteCount == 0x200)
        #expect(request.writableByteCount == 0x20)
        var pieces: [Int] = []
        try device.forEachReadable(in: request) { pieces.append($0.count) }
        #expect(pieces == [0x100, 0x100])
        var gathered = [UInt8](repeating: 0, count: 0x200)
        _ = try gathered.withUnsafeMutableBytes { try device.gather(request, into: $0) }
        #expect(gathered == readable)
        let reply = (0..<0x20).map { UInt8(0xC0 + $0) }
        #expect(try reply.withUnsafeBytes { try device.scatter($0, into: request) } == 0x20)
        try device.complete(request, written: 0x20)
        let first = try memory.withBytes(at: 0x3_0FF0, count: 0x10) { Array($0) }
        let second = try memory.withBytes(at: 0x3_1000, count: 0x10) { Array($0) }
        #expect(first + second == reply)
        #expect(try raw.used(slot: 0) == (0, 0x20))
    }

    // MARK: Hostile addresses

    enum HostileAddress: String, CaseIterable, CustomTestStringConvertible {
        case inAGap, straddlingAMappingsEnd, overflowing, overTheRings, indirectTableAcrossMappings

        var testDescription: String { rawValue }
    }

    @Test(arguments: HostileAddress.allCases)
    func aHostileAddressBreaksTheQueue(_ hostile: HostileAddress) throws {
        let memory = try Self.memory()
        // The rings are off limits to buffers: the buffer area starts past their mapping.
        let placement = Self.placement(bufferArea: 0x1_0000..<0x4_0000)
        var raw = RawDriver(memory, placement)
        var expected = VirtqueueError.Code.bufferOutOfRange
        switch hostile {
        case .inAGap:
            try raw.descriptor(0, buffer: 0x1_8000, length: 16)
        case .straddlingAMappingsEnd:
            try raw.descriptor(0, buffer: 0x2_3FF0, length: 0x20)
        case .overflowing:
            try raw.descriptor(0, buffer: UInt64.max - 0x10, length: 0x20)
        case .overTheRings:
            try raw.descriptor(0, buffer: 0x1200, length: 8)
        case .indirectTableAcrossMappings:
            try raw.descriptor(0, buffer: 0x3_0FF0, length: 32, flags: 4)
            expected = .indirectOutOfRange
        }
        try raw.makeAvailable(head: 0)
        var device = try makeDevice(memory, placement)
        let error = try #require(throws: VirtqueueError.self) { _ = try device.nextRequest() }
        #expect(error.code == expected)
        #expect(error.isPeerViolation)
        let broken = device.isBroken
        #expect(broken)
        let again = try #require(throws: VirtqueueError.self) { _ = try device.nextRequest() }
        #expect(again.code == .queueBroken)
        #expect(again.cause == expected)
    }

    @Test func theErrorNamesTheAddressAndWhy() throws {
        let memory = try Self.memory()
        var raw = RawDriver(memory, Self.placement())
        try raw.descriptor(0, buffer: 0x1_8000, length: 16)
        try raw.makeAvailable(head: 0)
        var device = try makeDevice(memory)
        let error = try #require(throws: VirtqueueError.self) { _ = try device.nextRequest() }
        #expect(error.message.contains("0x18000"))
        #expect(error.message.contains("gap"))
    }

    // MARK: Caller mistakes

    @Test func overlappingMappingsAreRefused() throws {
        let error = try #require(throws: VirtqueueError.self) {
            _ = try HeapGuestMemory(mappings: [(busAddress: 0x1000, byteCount: 0x1000), (0x1800, 0x1000)])
        }
        #expect(error.code == .invalidConfiguration)
        #expect(error.message.contains("overlaps"))
    }

    @Test func aMappingPastTwoToTheSixtyFourIsRefused() throws {
        let error = try #require(throws: VirtqueueError.self) {
            _ = try HeapGuestMemory(mappings: [(busAddress: UInt64.max - 0x10, byteCount: 0x100)])
        }
        #expect(error.code == .invalidConfiguration)
    }

    @Test func aPlacementOutsideMemoryIsATypedError() throws {
        var placement = Self.placement()
        placement.deviceArea = 0x5000  // in a gap
        let error = try #require(throws: VirtqueueError.self) { _ = try makeDevice(try Self.memory(), placement) }
        #expect(error.code == .addressOutOfRange)
        #expect(error.message.contains("used ring"))
        #expect(!error.isPeerViolation)

        placement = Self.placement()
        placement.descriptorArea = 0x1FC0  // the table runs past its mapping's end
        let past = try #require(throws: VirtqueueError.self) { _ = try makeDevice(try Self.memory(), placement) }
        #expect(past.code == .addressOutOfRange || past.code == .invalidPlacement)
    }

    @Test func aPoolOutsideMemoryIsATypedError() throws {
        let error = try #require(throws: VirtqueueError.self) {
            _ = try DriverQueue(
                memory: try Self.memory(),
                placement: Self.placement(),
                notifier: HeapNotifier.makePair().driver,
                features: Self.features,
                pool: 0x5_0000..<0x6_0000
            )
        }
        #expect(error.code == .invalidConfiguration)
        #expect(error.message.contains("0x50000"))
    }

    @Test func overlappingOrMisalignedAreasAreTypedErrors() throws {
        var placement = Self.placement()
        placement.driverArea = 0x1040  // inside the descriptor table
        let overlap = try #require(throws: VirtqueueError.self) { _ = try makeDevice(try Self.memory(), placement) }
        #expect(overlap.code == .invalidPlacement)
        placement = Self.placement()
        placement.deviceArea = 0x1202
        let misaligned = try #require(throws: VirtqueueError.self) { _ = try makeDevice(try Self.memory(), placement) }
        #expect(misaligned.code == .misaligned)
    }

    @Test func aCursorThatDoesNotFitTheRingIsRefused() throws {
        let tooFar = Self.placement(cursor: QueueCursor(nextAvailable: 100, nextUsed: 50))
        let error = try #require(throws: VirtqueueError.self) { _ = try makeDevice(try Self.memory(), tooFar) }
        #expect(error.code == .invalidPlacement)
        #expect(error.message.contains("100"))
        // A driver starts with nothing in flight.
        let inFlight = try #require(throws: VirtqueueError.self) {
            _ = try DriverQueue(
                memory: try Self.memory(),
                placement: Self.placement(cursor: QueueCursor(nextAvailable: 3, nextUsed: 1)),
                notifier: HeapNotifier.makePair().driver,
                features: Self.features,
                pool: 0x1_0000..<0x1_4000
            )
        }
        #expect(inFlight.code == .invalidPlacement)
    }
}
