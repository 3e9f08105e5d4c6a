import Virtqueue

/// The multi-mapping memory both harnesses build in their mapped mode, from one layout byte:
/// one mapping for the rings and the buffer space split into two or three mappings, each its own
/// heap allocation, some adjacent in bus address (a buffer may span them) and some with a gap.
///
/// | selector bits | meaning |
/// |---|---|
/// | 0–1 | buffer mappings: `A|B`; `A|B _ C`; `A _ B|C`; `A|B|C` (`|` adjacent, `_` a gap) |
/// | 2 | a buffer area that cuts 16 bytes off the first and last buffer mappings; else none (all memory) |
/// | 3 | the buffer mappings end at bus address 2^64 − 1, the highest a mapping may end; else they start at 1 MiB |
/// | 4 | the rings' mapping ends where the first buffer mapping starts; else it is at bus 4 KiB |
/// | 5 | gaps of 1 byte; else 64 |
/// | 6–7 | how the buffer bytes are split (weights 1:1:1, 1:3:2, 5:1:2, 2:2:1); odd values add a few bytes to each mapping and skew their host addresses off 16-byte alignment |
///
/// The rings' mapping holds, in this order, the used ring, the descriptor table and the
/// available ring; only their areas' sizes come from the core (``SplitRingFields``).
struct MappedLayout {
    /// Each mapping's bus address, size and host skew; index 0 holds the rings.
    let mappings: [(bus: UInt64, count: Int, skew: Int)]
    /// The indices of the buffer mappings, in bus order.
    let bufferMappings: [Int]
    /// The queue's placement in that memory.
    let placement: QueuePlacement

    init(size: Int, bufferBytes: Int, selector: UInt8, cursor: QueueCursor = .start) {
        let arrangement = Int(selector & 3)
        let gap: UInt64 = selector & 0x20 != 0 ? 1 : 64
        let split = Int(selector >> 6)
        let weights = [[1, 1, 1], [1, 3, 2], [5, 1, 2], [2, 2, 1]][split]
        let count = arrangement == 0 ? 2 : 3
        let weightSum = weights.prefix(count).reduce(0, +)
        let sizes = (0..<count).map { index in
            max(16, bufferBytes * weights[index] / weightSum + (split & 1 == 1 ? 3 * index + 5 : 0))
        }
        let gapsAfter: [UInt64] =
            switch arrangement {
            case 0: [0]
            case 1: [0, gap]
            case 2: [gap, 0]
            default: [0, 0]
            }
        let span = UInt64(sizes.reduce(0, +)) + gapsAfter.reduce(0, +)
        let first: UInt64 = selector & 8 != 0 ? UInt64.max - span : 0x10_0000
        var buffers: [(bus: UInt64, count: Int, skew: Int)] = []
        var bus = first
        for index in 0..<count {
            buffers.append((bus, sizes[index], split & 1 == 1 ? [5, 8, 1][index] : 0))
            bus += UInt64(sizes[index]) + (index < gapsAfter.count ? gapsAfter[index] : 0)
        }
        let last = bus

        let bytes = SplitRingFields.areaByteCounts(size: size)
        let descriptorOffset = (bytes.device + 15) & ~15
        let driverOffset = descriptorOffset + bytes.descriptor
        let needed = UInt64(driverOffset + bytes.driver)
        let ringBase: UInt64 = selector & 0x10 != 0 ? (first - needed) & ~15 : 0x1000
        let ringCount = selector & 0x10 != 0 ? Int(first - ringBase) : Int(needed) + 8

        mappings = [(ringBase, ringCount, 0)] + buffers
        bufferMappings = Array(1...count)
        placement = QueuePlacement(
            format: .split,
            size: size,
            descriptorArea: ringBase + UInt64(descriptorOffset),
            driverArea: ringBase + UInt64(driverOffset),
            deviceArea: ringBase,
            cursor: cursor,
            bufferArea: selector & 4 != 0 ? (first + 16)..<(last - 16) : nil
        )
    }

    /// The buffer mappings' bus ranges, in bus order.
    var bufferRanges: [Range<UInt64>] {
        bufferMappings.map { mappings[$0].bus..<mappings[$0].bus + UInt64(mappings[$0].count) }
    }
}
