/// Where one virtqueue's three parts lie inside a region.
///
/// Sizes follow virtio 1.x for queue size N (``RingFormat/areas(size:)``): for the split ring
/// (§2.7) a descriptor table of 16·N bytes (alignment 16), an available ring of 6 + 2·N bytes
/// (alignment 2) and a used ring of 6 + 8·N bytes (alignment 4); for the packed ring (§2.8) a
/// descriptor ring of 16·N bytes (alignment 16) and the driver's and the device's
/// event-suppression structures of 4 bytes each (alignment 4), in the places of the available
/// and used rings. This library places each part on a 64-byte boundary so the driver's and the
/// device's hot fields never share a cache line.
public struct QueueLayout: Hashable, Sendable {
    /// The largest queue size virtio allows (``RingFormat/maximumQueueSize``).
    public static let maximumSize = RingFormat.maximumQueueSize

    /// The ring format: the region's (``RegionLayout/format``).
    public let format: RingFormat
    /// The queue size N: the number of descriptors, and of entries in each ring.
    public let size: Int
    /// Offset of the descriptor table from the start of the region.
    public let descriptorTableOffset: Int
    /// Offset of the available ring (`flags`, `idx`, `ring[N]`, `used_event`); for the packed
    /// ring, of the driver event-suppression structure.
    public let availableRingOffset: Int
    /// Offset of the used ring (`flags`, `idx`, `ring[N]`, `avail_event`); for the packed ring,
    /// of the device event-suppression structure.
    public let usedRingOffset: Int

    /// Bytes in the descriptor table of a queue of `size` entries.
    public static func descriptorTableByteCount(size: Int) -> Int {
        SplitRingFields.areaByteCounts(size: size).descriptor
    }
    /// Bytes in the available ring of a queue of `size` entries.
    public static func availableRingByteCount(size: Int) -> Int { SplitRingFields.areaByteCounts(size: size).driver }
    /// Bytes in the used ring of a queue of `size` entries.
    public static func usedRingByteCount(size: Int) -> Int { SplitRingFields.areaByteCounts(size: size).device }

    /// Checks that `size` is a valid split-ring queue size: a power of two from 1 to 32768
    /// (``RingFormat/validate(size:)`` checks either format).
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/invalidQueueSize``, naming the value.
    public static func validate(size: Int) throws(VirtqueueError) {
        try RingFormat.split.validate(size: size)
    }

    /// Creates a layout from explicit offsets. Use ``RegionLayout/init(queueSizes:dataAreaSize:features:)``
    /// to compute one.
    public init(
        size: Int,
        descriptorTableOffset: Int,
        availableRingOffset: Int,
        usedRingOffset: Int,
        format: RingFormat = .split
    ) {
        self.format = format
        self.size = size
        self.descriptorTableOffset = descriptorTableOffset
        self.availableRingOffset = availableRingOffset
        self.usedRingOffset = usedRingOffset
    }

    /// The byte ranges of the three parts, for overlap and bounds checks.
    var ranges: [Range<Int>] {
        zip([descriptorTableOffset, availableRingOffset, usedRingOffset], format.areas(size: size)).map {
            $0..<$0 + $1.byteCount
        }
    }
}

/// The layout of a whole region: a versioned header, one or more virtqueues of one ring format
/// and a data area that holds the buffers.
///
/// The header lets a peer attach knowing only the region (a file descriptor, say); its byte
/// layout is specified in `docs/wire-format.md`. The creator computes a layout with
/// ``init(queueSizes:dataAreaSize:features:)`` and writes it with ``initialize(_:)``; each queue
/// — driver or device, in this process or another — then reads it back with
/// ``init(reading:)``, which validates every field, because the header lives in shared memory.
public struct RegionLayout: Hashable, Sendable {
    /// The header's magic number: the ASCII bytes `SWIFTVQ` followed by a zero byte.
    public static let magic: UInt64 = 0x0051_5654_4649_5753
    /// The header format version this library writes and reads. Version 2 added the ring
    /// format (offset `0x30`); a version-1 reader refuses it, and this one refuses version 1.
    public static let version: UInt16 = 2
    /// The most queues a region may hold.
    public static let maximumQueueCount = 64
    /// Bytes of the fixed header, before the per-queue entries.
    public static let fixedHeaderByteCount = 64
    /// Bytes of each per-queue header entry.
    public static let queueEntryByteCount = 32
    /// Alignment of every area the layout places (queues and data area).
    public static let areaAlignment = 64

    /// The queues, in order; queue `i` is addressed by index `i`.
    public let queues: [QueueLayout]
    /// The negotiated features; both sides of every queue use exactly these.
    public let features: Features
    /// The ring format of every queue: ``RingFormat/packed`` when ``features`` has
    /// ``Features/ringPacked``, else ``RingFormat/split``. The queues run either.
    public let format: RingFormat
    /// Offset of the data area, where buffers live.
    public let dataAreaOffset: Int
    /// Bytes in the data area.
    public let dataAreaSize: Int
    /// Total bytes the layout covers; the region must have at least this many.
    public let regionSize: Int

    /// Bytes of the header including the per-queue entries.
    public var headerByteCount: Int { Self.fixedHeaderByteCount + Self.queueEntryByteCount * queues.count }

    /// Computes a packed layout: header, then each queue's descriptor table, available ring and
    /// used ring (for the packed ring: descriptor ring and the two event-suppression
    /// structures), then the data area.
    ///
    /// - Parameters:
    ///   - queueSizes: The size of each queue; each a power of two from 1 to 32768 (for the
    ///     packed ring, any size from 1 to 32768).
    ///   - dataAreaSize: Bytes for buffers (the driver's pool is carved out of them).
    ///   - features: The negotiated features; ``Features/version1`` is added if missing. With
    ///     ``Features/ringPacked`` the queues are packed ones.
    /// - Throws: ``VirtqueueError`` naming the bad value.
    public init(queueSizes: [Int], dataAreaSize: Int, features: Features) throws(VirtqueueError) {
        guard (1...Self.maximumQueueCount).contains(queueSizes.count) else {
            throw VirtqueueError(
                .invalidConfiguration,
                "queue count \(queueSizes.count) is not between 1 and \(Self.maximumQueueCount)"
            )
        }
        guard dataAreaSize >= 0, dataAreaSize <= Int(UInt32.max) * 16 else {
            throw VirtqueueError(.invalidConfiguration, "data area size \(dataAreaSize) is out of range")
        }
        try features.union(.version1).validateForLayout()
        let format: RingFormat = features.contains(.ringPacked) ? .packed : .split
        var offset = Self.align(Self.fixedHeaderByteCount + Self.queueEntryByteCount * queueSizes.count)
        var queues: [QueueLayout] = []
        for size in queueSizes {
            try format.validate(size: size)
            var offsets: [Int] = []
            for area in format.areas(size: size) {
                offsets.append(offset)
                offset = Self.align(offset + area.byteCount)
            }
            queues.append(
                QueueLayout(
                    size: size,
                    descriptorTableOffset: offsets[0],
                    availableRingOffset: offsets[1],
                    usedRingOffset: offsets[2],
                    format: format
                )
            )
        }
        self.queues = queues
        self.features = features.union(.version1)
        self.format = format
        self.dataAreaOffset = offset
        self.dataAreaSize = dataAreaSize
        self.regionSize = offset + dataAreaSize
    }

    /// Writes the header and zeroes every ring, making the memory ready for a driver and a device.
    ///
    /// Call this once, on the side that creates the region, before either queue attaches. The
    /// header and each ring must each lie inside one mapping; the data area may span several.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/regionTooSmall`` if the memory does not map
    ///   the ``regionSize`` bytes the layout needs from bus address 0, or
    ///   ``VirtqueueError/Code-swift.struct/misaligned`` if the header is not 16-byte aligned.
    public func initialize<Memory: GuestMemory & ~Copyable>(_ memory: borrowing Memory) throws(VirtqueueError) {
        try checkMapped(in: memory)
        try memory.withBytes(at: 0, count: headerByteCount) { (raw) throws(VirtqueueError) in
            try Self.checkAlignment(of: raw)
            raw.initializeMemory(as: UInt8.self, repeating: 0)
            raw.storeBytes(of: Self.magic.littleEndian, toByteOffset: 0x00, as: UInt64.self)
            raw.storeBytes(of: Self.version.littleEndian, toByteOffset: 0x08, as: UInt16.self)
            raw.storeBytes(of: UInt16(queues.count).littleEndian, toByteOffset: 0x0A, as: UInt16.self)
            raw.storeBytes(of: UInt32(headerByteCount).littleEndian, toByteOffset: 0x0C, as: UInt32.self)
            raw.storeBytes(of: features.rawValue.littleEndian, toByteOffset: 0x10, as: UInt64.self)
            raw.storeBytes(of: UInt64(regionSize).littleEndian, toByteOffset: 0x18, as: UInt64.self)
            raw.storeBytes(of: UInt64(dataAreaOffset).littleEndian, toByteOffset: 0x20, as: UInt64.self)
            raw.storeBytes(of: UInt64(dataAreaSize).littleEndian, toByteOffset: 0x28, as: UInt64.self)
            raw.storeBytes(of: format.headerValue.littleEndian, toByteOffset: 0x30, as: UInt16.self)
            for (index, queue) in queues.enumerated() {
                let entry = Self.fixedHeaderByteCount + index * Self.queueEntryByteCount
                raw.storeBytes(of: UInt16(queue.size).littleEndian, toByteOffset: entry, as: UInt16.self)
                raw.storeBytes(
                    of: UInt64(queue.descriptorTableOffset).littleEndian,
                    toByteOffset: entry + 8,
                    as: UInt64.self
                )
                raw.storeBytes(
                    of: UInt64(queue.availableRingOffset).littleEndian,
                    toByteOffset: entry + 16,
                    as: UInt64.self
                )
                raw.storeBytes(of: UInt64(queue.usedRingOffset).littleEndian, toByteOffset: entry + 24, as: UInt64.self)
            }
        }
        for queue in queues {
            for range in queue.ranges {
                try memory.withBytes(at: UInt64(range.lowerBound), count: range.count) { (raw) throws(VirtqueueError) in
                    raw.initializeMemory(as: UInt8.self, repeating: 0)
                }
            }
        }
    }

    /// Reads and validates the header at bus address 0 of `memory` (a ``MemoryRegion``, or
    /// guest memory of several mappings laid out the same way).
    ///
    /// Every field is read once and checked: magic, version, queue count, header size, feature
    /// bits, each queue's size, alignment and bounds, the data area's bounds, and that no two
    /// areas overlap; then that the memory maps every byte the layout names. Nothing outside the
    /// memory is read.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/invalidHeader`` naming the bad field and value.
    public init<Memory: GuestMemory & ~Copyable>(reading memory: borrowing Memory) throws(VirtqueueError) {
        let mapped = try memory.withMappings { (mappings) throws(VirtqueueError) -> UInt64 in
            let map = try AddressMap(mappings)
            defer { map.deallocate() }
            guard var index = map.window(containing: 0) else {
                throw VirtqueueError(.invalidHeader, "the memory maps nothing at bus address 0, where the header goes")
            }
            // The bytes mapped without a gap from bus address 0, across adjacent mappings.
            while index + 1 < map.count, map.windows[index + 1].start == map.windows[index].end { index += 1 }
            return map.windows[index].end
        }
        // The header's own size field says how much to read; the header is then read and
        // validated once, from that one copy.
        let firstMapping = try memory.withMappings { (mappings) throws(VirtqueueError) -> UInt64 in
            let map = try AddressMap(mappings)
            defer { map.deallocate() }
            return map.windows[map.window(containing: 0) ?? 0].end
        }
        let declared = try memory.withBytes(at: 0, count: Int(min(firstMapping, 0x10))) {
            (raw) throws(VirtqueueError) -> Int in
            raw.count < 0x10 ? 0 : Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 0x0C, as: UInt32.self)))
        }
        let largest = Self.fixedHeaderByteCount + Self.maximumQueueCount * Self.queueEntryByteCount
        let count = Int(min(firstMapping, UInt64(min(max(declared, Self.fixedHeaderByteCount), largest))))
        let layout = try memory.withBytes(at: 0, count: count) { (raw) throws(VirtqueueError) -> RegionLayout in
            try Self.checkAlignment(of: raw)
            return try RegionLayout(parsing: UnsafeRawBufferPointer(raw), mappedBytes: Int(clamping: mapped))
        }
        do {
            try layout.checkMapped(in: memory)
        } catch {
            throw VirtqueueError(.invalidHeader, error.message)
        }
        self = layout
    }

    /// The layout `memory` knows (``GuestMemory/regionLayout``: what this process wrote or
    /// validated once), or else the one its header holds, read and validated now.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/invalidHeader`` (see ``init(reading:)``).
    public static func of<Memory: GuestMemory & ~Copyable>(_ memory: borrowing Memory) throws(VirtqueueError)
        -> RegionLayout
    {
        if let known = memory.regionLayout { return known }
        return try RegionLayout(reading: memory)
    }

    /// The placement of queue `index`: the region's ring format, its areas at their offsets (bus
    /// address = offset), a fresh cursor, and buffers confined to the data area.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/noSuchQueue`` if `index` is not one of the queues.
    public func placement(ofQueue index: Int) throws(VirtqueueError) -> QueuePlacement {
        guard queues.indices.contains(index) else {
            throw VirtqueueError(
                .noSuchQueue,
                "queue index \(index) is not below the region's \(queues.count) queues"
            )
        }
        let queue = queues[index]
        return QueuePlacement(
            format: format,
            size: queue.size,
            descriptorArea: UInt64(queue.descriptorTableOffset),
            driverArea: UInt64(queue.availableRingOffset),
            deviceArea: UInt64(queue.usedRingOffset),
            cursor: nil,
            bufferArea: UInt64(dataAreaOffset)..<UInt64(dataAreaOffset + dataAreaSize)
        )
    }

    /// Checks that `memory` maps the header and each ring inside one mapping, and every byte of
    /// the data area.
    func checkMapped<Memory: GuestMemory & ~Copyable>(in memory: borrowing Memory) throws(VirtqueueError) {
        try memory.withMappings { (mappings) throws(VirtqueueError) in
            let map = try AddressMap(mappings)
            defer { map.deallocate() }
            var mapped: UInt64 = 0
            if var index = map.window(containing: 0) {
                while index + 1 < map.count, map.windows[index + 1].start == map.windows[index].end { index += 1 }
                mapped = map.windows[index].end
            }
            guard mapped >= UInt64(regionSize) else {
                throw VirtqueueError(
                    .regionTooSmall,
                    "the memory maps \(mapped) bytes from bus address 0 without a gap, fewer than the \(regionSize) bytes the layout needs"
                )
            }
            var areas: [(String, Range<Int>)] = [("header", 0..<headerByteCount)]
            for (index, queue) in queues.enumerated() {
                for (part, range) in zip(["descriptor table", "available ring", "used ring"], queue.ranges) {
                    areas.append(("queue \(index) \(part)", range))
                }
            }
            for (name, range) in areas
            where map.contiguousHost(UInt64(range.lowerBound), length: UInt64(range.count)) == nil {
                throw VirtqueueError(
                    .regionTooSmall,
                    "the memory does not map the \(name) at \(range) inside one mapping (mappings: \(map.describeWindows()))"
                )
            }
            if dataAreaSize > 0,
                let problem = map.problem(address: UInt64(dataAreaOffset), length: UInt64(dataAreaSize))
            {
                throw VirtqueueError(
                    .regionTooSmall,
                    "the memory does not map the data area at \(dataAreaOffset) of \(dataAreaSize) bytes: \(problem)"
                )
            }
        }
    }

    /// Reads and validates a region header from raw bytes; see ``init(reading:)``.
    public init(parsing bytes: UnsafeRawBufferPointer) throws(VirtqueueError) {
        try self.init(parsing: bytes, mappedBytes: bytes.count)
    }

    /// Parses a header whose first `bytes.count` bytes are given, in memory that maps
    /// `mappedBytes` bytes from bus address 0 (the region size may not exceed it).
    init(parsing bytes: UnsafeRawBufferPointer, mappedBytes: Int) throws(VirtqueueError) {
        func bad(_ text: String) -> VirtqueueError { VirtqueueError(.invalidHeader, text) }
        guard bytes.count >= Self.fixedHeaderByteCount else {
            throw bad(
                "region of \(bytes.count) bytes is too small to hold the \(Self.fixedHeaderByteCount)-byte header"
            )
        }
        let magic = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x00, as: UInt64.self))
        guard magic == Self.magic else {
            throw bad("magic \(Self.describeMagic(magic)) is not \(Self.describeMagic(Self.magic))")
        }
        let version = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x08, as: UInt16.self))
        guard version == Self.version else {
            throw bad(
                "version \(version) is not \(Self.version)"
                    + (version == 1
                        ? " (version 1 has no ring-format field; rebuild the peer against this header)" : "")
            )
        }
        let queueCount = Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x0A, as: UInt16.self)))
        guard (1...Self.maximumQueueCount).contains(queueCount) else {
            throw bad("queue count \(queueCount) is not between 1 and \(Self.maximumQueueCount)")
        }
        let headerSize = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x0C, as: UInt32.self)))
        let expectedHeader = Self.fixedHeaderByteCount + queueCount * Self.queueEntryByteCount
        guard headerSize == expectedHeader else {
            throw bad("header size \(headerSize) is not \(expectedHeader) for \(queueCount) queues")
        }
        guard headerSize <= bytes.count else {
            throw bad("header of \(headerSize) bytes runs past the region's \(bytes.count) bytes")
        }
        let features = Features(
            rawValue: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x10, as: UInt64.self))
        )
        do {
            try features.validateForLayout()
        } catch {
            throw bad(error.message)
        }
        let formatValue = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x30, as: UInt16.self))
        guard let format = RingFormat(headerValue: formatValue) else {
            throw bad("ring format \(formatValue) is neither split (0) nor packed (1)")
        }
        guard (format == .packed) == features.contains(.ringPacked) else {
            throw bad(
                "ring format \(format) (\(formatValue)) disagrees with features \(features): RING_PACKED (bit 34) is "
                    + (format == .packed ? "not set" : "set")
            )
        }
        let regionSize64 = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x18, as: UInt64.self))
        guard regionSize64 <= UInt64(mappedBytes) else {
            throw bad("region size \(regionSize64) is larger than the \(mappedBytes) bytes mapped")
        }
        let regionSize = Int(regionSize64)
        guard regionSize >= headerSize else { throw bad("region size \(regionSize) is smaller than the header") }
        let dataOffset64 = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x20, as: UInt64.self))
        let dataSize64 = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x28, as: UInt64.self))
        guard dataOffset64 <= regionSize64, dataSize64 <= regionSize64 - dataOffset64 else {
            throw bad("data area at \(dataOffset64) of \(dataSize64) bytes runs past the region's \(regionSize) bytes")
        }
        let dataOffset = Int(dataOffset64)
        let dataSize = Int(dataSize64)
        guard dataOffset % 16 == 0 else { throw bad("data area offset \(dataOffset) is not 16-byte aligned") }
        guard dataOffset >= headerSize else {
            throw bad("data area offset \(dataOffset) overlaps the \(headerSize)-byte header")
        }
        var areas: [(name: String, range: Range<Int>)] = [("data area", dataOffset..<dataOffset + dataSize)]
        var queues: [QueueLayout] = []
        for index in 0..<queueCount {
            let entry = Self.fixedHeaderByteCount + index * Self.queueEntryByteCount
            let size = Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: entry, as: UInt16.self)))
            do {
                try format.validate(size: size)
            } catch {
                throw bad("queue \(index): \(error.message)")
            }
            let parts = format.areas(size: size)
            var offsets: [Int] = []
            for (field, area) in zip([8, 16, 24], parts) {
                let value = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: entry + field, as: UInt64.self))
                guard value <= regionSize64 else {
                    throw bad("queue \(index): \(area.name) offset \(value) is past the region's \(regionSize) bytes")
                }
                guard Int(value) % area.alignment == 0 else {
                    throw bad("queue \(index): \(area.name) offset \(value) is not \(area.alignment)-byte aligned")
                }
                offsets.append(Int(value))
            }
            let queue = QueueLayout(
                size: size,
                descriptorTableOffset: offsets[0],
                availableRingOffset: offsets[1],
                usedRingOffset: offsets[2],
                format: format
            )
            for (part, range) in zip(parts.map(\.name), queue.ranges) {
                guard range.lowerBound >= headerSize, range.upperBound <= regionSize else {
                    throw bad("queue \(index): \(part) at \(range) lies outside \(headerSize)..<\(regionSize)")
                }
                areas.append(("queue \(index) \(part)", range))
            }
            queues.append(queue)
        }
        for first in areas.indices {
            for second in areas.indices where second > first {
                if areas[first].range.overlaps(areas[second].range) {
                    throw bad(
                        "\(areas[first].name) \(areas[first].range) overlaps \(areas[second].name) \(areas[second].range)"
                    )
                }
            }
        }
        self.queues = queues
        self.features = features
        self.format = format
        self.dataAreaOffset = dataOffset
        self.dataAreaSize = dataSize
        self.regionSize = regionSize
    }

    /// The region's first byte must be 16-byte aligned: descriptor tables need 16, and the
    /// ring indices are accessed atomically.
    static func checkAlignment(of raw: UnsafeMutableRawBufferPointer) throws(VirtqueueError) {
        let address = UInt(bitPattern: raw.baseAddress)
        guard address != 0, address % 16 == 0 else {
            throw VirtqueueError(
                .misaligned,
                "region start 0x\(String(address, radix: 16)) is not 16-byte aligned"
            )
        }
    }

    /// A magic number as the eight bytes it is in memory, printable ones as ASCII:
    /// `"SWIFTVQ\0" (53 57 49 46 54 56 51 00)`.
    static func describeMagic(_ value: UInt64) -> String {
        let bytes = withUnsafeBytes(of: value.littleEndian) { Array($0) }
        let text = bytes.map { (32..<127).contains($0) ? String(UnicodeScalar($0)) : ($0 == 0 ? "\\0" : "·") }.joined()
        let hexBytes = bytes.map {
            String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16)
        }
        return "\"\(text)\" (\(hexBytes.joined(separator: " ")))"
    }

    static func align(_ value: Int) -> Int {
        (value + areaAlignment - 1) & ~(areaAlignment - 1)
    }
}
