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
        ("version", 0x08, 2, 2),
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
