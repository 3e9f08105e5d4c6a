import Testing
import Virtqueue
import VirtqueueConformance

/// The region header is peer data too: every malformed field is refused with a typed error,
/// and nothing is read past the mapping.
@Suite("Region header")
struct HeaderTests {
    func makeRegion() throws -> (GuardedRegion, RegionLayout, RingWriter) {
        let layout = try RegionLayout(queueSizes: [16, 8], dataAreaSize: 4096, features: .all)
        let region = try GuardedRegion(layout: layout)
        return (region, layout, RingWriter(region: region, layout: layout))
    }

    @Test func roundTrip() throws {
        let (region, layout, _) = try makeRegion()
        let read = try RegionLayout(reading: region)
        #expect(read == layout)
        #expect(read.queues.count == 2)
        #expect(read.features == .all)
    }

    @Test func magicIsTheASCIIBytesSWIFTVQ() throws {
        let (region, _, ring) = try makeRegion()
        let bytes = (0..<8).map { ring.load(UInt8.self, at: $0) }
        #expect(bytes == Array("SWIFTVQ".utf8) + [0])
        #expect(region.count > 0)
    }

    @Test func aWrongMagicIsPrintedAsBytes() throws {
        let (region, _, ring) = try makeRegion()
        ring.store(UInt64(0x0021_5150_5551_4956), at: 0)  // "VIQUPQ!\0"
        let error = try #require(throws: VirtqueueError.self) { _ = try RegionLayout(reading: region) }
        #expect(error.code == .invalidHeader)
        #expect(error.message.contains("\"VIQUPQ!\\0\" (56 49 51 55 50 51 21 00)"))
        #expect(error.message.contains("\"SWIFTVQ\\0\" (53 57 49 46 54 56 51 00)"))
    }

    static let corruptions: [(name: String, offset: Int, value: UInt64, width: Int)] = [
        ("magic", 0x00, 0x1234, 8),
        ("version", 0x08, 3, 2),
        ("queue count zero", 0x0A, 0, 2),
        ("queue count too large", 0x0A, 65, 2),
        ("header size", 0x0C, 96, 4),
        ("unknown feature bit", 0x10, (1 << 32) | (1 << 40), 8),
        ("missing VERSION_1", 0x10, 1 << 29, 8),
        ("region size past the mapping", 0x18, 1 << 40, 8),
        ("data area past the region", 0x28, 1 << 40, 8),
        ("data area offset overflowing", 0x20, UInt64.max - 4, 8),
        ("data area overlapping header", 0x20, 64, 8),
        ("queue size not a power of two", 0x40, 12, 2),
        ("queue size zero", 0x40, 0, 2),
        ("descriptor table misaligned", 0x48, 0x108, 8),
        ("descriptor table past the end", 0x48, 1 << 33, 8),
        ("available ring overlapping the header", 0x50, 0x20, 8),
        ("used ring overlapping queue 1", 0x78, 0, 8),
        ("two queues at the same offsets", 0x68, 0, 8),
    ]

    @Test(arguments: corruptions.indices)
    func corruptHeaderIsRefused(index: Int) throws {
        let corruption = Self.corruptions[index]
        let (region, layout, ring) = try makeRegion()
        var value = corruption.value
        if corruption.name == "used ring overlapping queue 1" {
            value = UInt64(layout.queues[1].availableRingOffset)
        }
        if corruption.name == "two queues at the same offsets" {
            value = UInt64(layout.queues[0].descriptorTableOffset)
        }
        switch corruption.width {
        case 2: ring.store(UInt16(truncatingIfNeeded: value), at: corruption.offset)
        case 4: ring.store(UInt32(truncatingIfNeeded: value), at: corruption.offset)
        default: ring.store(value, at: corruption.offset)
        }
        do {
            _ = try RegionLayout(reading: region)
            Issue.record("a header with a bad \(corruption.name) was accepted")
        } catch {
            #expect(error.code == .invalidHeader, "\(corruption.name): \(error)")
        }
        #expect(throws: VirtqueueError.self) {
            _ = try DeviceQueue(region: region, notifier: CountingNotifier())
        }
        #expect(region.guardsIntact)
    }

    /// Version 2 (docs/wire-format.md §2.1) carries the ring format at 0x30: 0 for split.
    @Test func theHeaderIsVersionTwoWithARingFormat() throws {
        let (_, layout, ring) = try makeRegion()
        #expect(RegionLayout.version == 2)
        #expect(ring.load(UInt16.self, at: 0x08) == 2)
        #expect(ring.load(UInt16.self, at: 0x30) == 0)
        #expect(layout.format == .split)
        #expect(try layout.placement(ofQueue: 0).format == .split)
    }

    /// Each refusal names the value: a version-1 header (which has no ring-format field), a
    /// later version, an unknown ring format, and a format that disagrees with RING_PACKED.
    static let versionAndFormatRefusals: [(offset: Int, width: Int, value: UInt64, words: String)] = [
        (0x08, 2, 1, "version 1 is not 2 (version 1 has no ring-format field"),
        (0x08, 2, 3, "version 3 is not 2"),
        (0x30, 2, 7, "ring format 7 is neither split (0) nor packed (1)"),
        (0x30, 2, 0x100, "ring format 256 is neither split (0) nor packed (1)"),
        (
            0x30, 2, 1,
            "ring format packed (1) disagrees with features [INDIRECT_DESC, EVENT_IDX, VERSION_1]: RING_PACKED (bit 34) is not set"
        ),
        (
            0x10, 8, 1 << 32 | 1 << 34,
            "ring format split (0) disagrees with features [VERSION_1, RING_PACKED]: RING_PACKED (bit 34) is set"
        ),
    ]

    @Test(arguments: versionAndFormatRefusals.indices)
    func aVersionOrRingFormatIsRefusedByName(index: Int) throws {
        let refusal = Self.versionAndFormatRefusals[index]
        let (region, _, ring) = try makeRegion()
        if refusal.width == 2 {
            ring.store(UInt16(refusal.value), at: refusal.offset)
        } else {
            ring.store(refusal.value, at: refusal.offset)
        }
        let error = #expect(throws: VirtqueueError.self) { _ = try RegionLayout(reading: region) }
        #expect(error?.code == .invalidHeader)
        #expect(error?.message.contains(refusal.words) == true, "\(String(describing: error))")
        #expect(region.guardsIntact)
    }

    /// A packed region, with queue sizes that are not powers of two: byte for byte as
    /// docs/wire-format.md §2 lays it out, read back equal; the queues attach to it and run it.
    @Test func aPackedRegionRoundTripsAndTheQueuesRunIt() throws {
        let layout = try RegionLayout(queueSizes: [3, 5], dataAreaSize: 256, features: [.ringPacked, .eventIndex])
        #expect(layout.format == .packed)
        let region = try GuardedRegion(layout: layout)
        let ring = RingWriter(region: region, layout: layout)
        #expect(ring.load(UInt16.self, at: 0x08) == 2)
        #expect(ring.load(UInt16.self, at: 0x30) == 1)
        #expect(ring.load(UInt64.self, at: 0x10) == 1 << 29 | 1 << 32 | 1 << 34)
        // Header 64 + 2 × 32 = 128. Queue 0: ring of 3 × 16 at 0x80, events at 0xC0 and 0x100;
        // queue 1: ring of 5 × 16 at 0x140, events at 0x1C0 and 0x200; data at 0x240.
        let expected: [(Int, UInt16, [UInt64])] = [(0x40, 3, [0x80, 0xC0, 0x100]), (0x60, 5, [0x140, 0x1C0, 0x200])]
        for (entry, size, offsets) in expected {
            #expect(ring.load(UInt16.self, at: entry) == size)
            #expect([8, 16, 24].map { ring.load(UInt64.self, at: entry + $0) } == offsets)
        }
        #expect(layout.dataAreaOffset == 0x240 && layout.regionSize == 0x340)
        let read = try RegionLayout(reading: region)
        #expect(read == layout)
        #expect(read.queues.map(\.format) == [.packed, .packed])
        let placement = try read.placement(ofQueue: 1)
        #expect(placement.format == .packed && placement.size == 5 && placement.cursor == .packedStart)
        #expect(placement.areas.map { $0.range.count } == [80, 4, 4])
        try placement.validate()

        var device = try DeviceQueue(region: region, notifier: CountingNotifier(), queueIndex: 1)
        var driver = try DriverQueue(region: region, notifier: CountingNotifier(), queueIndex: 1, bufferSize: 64)
        #expect(device.queueSize == 5 && driver.queueSize == 5)
        var chain = driver.makeChain()
        try driver.appendReadable(to: &chain, copying: [1, 2, 3])
        let id = try driver.submit(chain)
        #expect(ring.load(UInt16.self, at: 0x140 + 14) == 0x0080, "descriptor 0 of queue 1 is available, wrap 1")
        let request = try device.requireRequest()
        #expect(request.id == id && request.readableByteCount == 3)
        try device.complete(request, written: 0)
        #expect(ring.load(UInt16.self, at: 0x140 + 14) == 0x8080, "and used, wrap 1")
        try driver.free(try driver.requireUsed())
        #expect(region.guardsIntact)
    }

    /// Packed queue entries keep the packed rules: sizes 1 to 32768, event structures 4-aligned.
    @Test(arguments: [
        (0x40, 2, UInt64(0), "queue 0: packed queue size 0 is not between 1 and 32768"),
        (0x50, 8, 0xC2, "queue 0: driver event suppression offset 194 is not 4-byte aligned"),
        (
            0x58, 8, 0xC0,
            "queue 0 driver event suppression 192..<196 overlaps queue 0 device event suppression 192..<196"
        ),
    ])
    func aBadPackedQueueEntryIsRefusedByName(offset: Int, width: Int, value: UInt64, words: String) throws {
        let layout = try RegionLayout(queueSizes: [3, 5], dataAreaSize: 256, features: [.ringPacked])
        let region = try GuardedRegion(layout: layout)
        let ring = RingWriter(region: region, layout: layout)
        if width == 2 { ring.store(UInt16(value), at: offset) } else { ring.store(value, at: offset) }
        let error = #expect(throws: VirtqueueError.self) { _ = try RegionLayout(reading: region) }
        #expect(error?.code == .invalidHeader)
        #expect(error?.message.contains(words) == true, "\(String(describing: error))")
    }

    @Test func truncatedBytesAreRefusedWithoutReadingPastThem() throws {
        let (region, _, _) = try makeRegion()
        for count in [0, 1, 63, 64, 127] {
            region.withUnsafeMutableBytes { raw in
                let prefix = UnsafeRawBufferPointer(rebasing: raw[0..<count])
                #expect(throws: VirtqueueError.self) { try RegionLayout(parsing: prefix) }
            }
        }
    }
}
