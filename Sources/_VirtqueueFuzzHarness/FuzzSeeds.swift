import Virtqueue

/// Seed inputs for the three fuzz targets, written by the real driver where a ring is needed,
/// so the fuzzer starts from well-formed rings and mutates outward. `MakeSeeds` writes them to
/// `FuzzTesting/Corpus/<target>/`.
public enum FuzzSeeds {
    /// A named seed.
    public typealias Seed = (name: String, bytes: [UInt8])

    /// Seeds for ``DeviceFuzzer``: rings the real driver filled (direct and indirect chains,
    /// with and without EVENT_IDX), then take, complete, notify and wait; plus a few malformed
    /// chains built with the descriptor-writing operation.
    public static func device() -> [Seed] {
        var seeds: [Seed] = []
        let shapes: [[(readable: Int, writable: Int)]] = [
            [(1, 0)],
            [(1, 1), (2, 1)],
            [(3, 2), (1, 0), (0, 1)],
        ]
        for (sizeBits, size) in [(0, 4), (1, 8), (2, 16), (3, 1)] {
            for featureBits in [0, 4, 8, 12] {
                for (shapeIndex, shape) in shapes.enumerated() where shape.count <= size {
                    let config = UInt8(sizeBits | featureBits | 2 << 4 | 2 << 6)
                    guard let program = deviceProgram(config: config, size: size, shape: shape) else { continue }
                    seeds.append(("ring-n\(size)-f\(featureBits)-s\(shapeIndex)", program))
                }
            }
        }
        // Malformed chains on a queue of 4 with INDIRECT_DESC, written with op 7
        // (target, address-from-data-area + 64 (u16), length (u16), flags, next).
        func descriptor(_ target: UInt8, _ address: UInt16, _ length: UInt16, _ flags: UInt8, _ next: UInt8) -> [UInt8]
        {
            [
                7, target, UInt8(address & 0xFF), UInt8(address >> 8), UInt8(length & 0xFF), UInt8(length >> 8), flags,
                next,
            ]
        }
        let take: [UInt8] = [3, 3, 4, 0, 0, 5]
        let publishOne: [UInt8] = [2, 1]
        let config = UInt8(0 | 4 | 2 << 4 | 2 << 6)
        seeds.append(("loop", [config] + descriptor(0, 64, 16, 1, 1) + descriptor(1, 80, 16, 1, 0) + publishOne + take))
        seeds.append(("outside", [config] + descriptor(0, 2000, 16, 0, 0) + publishOne + take))
        seeds.append(
            ("write-then-read", [config] + descriptor(0, 64, 8, 3, 1) + descriptor(1, 80, 8, 0, 0) + publishOne + take)
        )
        seeds.append(
            (
                "indirect",
                [config] + descriptor(0x80, 100, 8, 1, 1) + descriptor(0x81, 116, 8, 2, 0) + descriptor(0, 64, 32, 4, 0)
                    + publishOne + take
            )
        )
        seeds.append(
            (
                "nested-indirect",
                [config] + descriptor(0x80, 64, 16, 4, 0) + descriptor(0, 64, 16, 4, 0) + publishOne + take
            )
        )
        seeds.append(("jump", [config, 1, 9, 0] + take))
        seeds.append(("wait-idle", [config, 6, 0, 6, 1, 5]))
        seeds += mappedDevice()
        return seeds
    }

    /// Seeds for the device's multi-mapping mode (``MappedLayout``): for several arrangements,
    /// a chain whose buffers cross the boundaries between buffer mappings (adjacent ones, so
    /// it splits into segments, or ones with a gap, so it is refused), and an indirect table
    /// written across a boundary; with a fresh cursor and a resumed one near the index wrap.
    static func mappedDevice() -> [Seed] {
        var seeds: [Seed] = []
        let config = UInt8(0 | 4 | 2 << 4 | 2 << 6)
        func descriptor(_ target: UInt8, _ relative: Int, _ length: UInt16, _ flags: UInt8, _ next: UInt8) -> [UInt8] {
            let address = UInt16(truncatingIfNeeded: 64 + relative)
            return [
                7, target, UInt8(address & 0xFF), UInt8(address >> 8), UInt8(length & 0xFF), UInt8(length >> 8), flags,
                next,
            ]
        }
        let take: [UInt8] = [2, 1, 3, 3, 4, 0, 0, 5]
        for selector: UInt8 in [0x00, 0x01, 0x02, 0x07, 0x1B, 0x2D, 0x4E, 0x93, 0xD1] {
            for cursor: UInt8 in [0x00, 0xF2] {
                let layout = MappedLayout(size: 4, bufferBytes: 1024, selector: selector)
                let ranges = layout.bufferRanges
                let starts = ranges.map { Int($0.lowerBound - ranges[0].lowerBound) }
                let ends = ranges.map { Int($0.upperBound - ranges[0].lowerBound) }
                let chain =
                    descriptor(0, ends[0] - 8, 24, 1, 1) + descriptor(1, ends[1] - 4, 12, 3, 2)
                    + descriptor(2, starts.last! + 20, 0, 2, 0)
                let indirect =
                    descriptor(0x80 | UInt8((ends[0] - 8) / 16 & 0x7F), ends[0] - 16, 40, 2, 0)
                    + descriptor(3, (ends[0] - 8) / 16 * 16, 16, 4, 0)
                seeds.append(
                    (
                        "mapped-l\(selector)-c\(cursor)",
                        [DeviceFuzzer.mappedMarker, config, selector, cursor] + chain + take
                    )
                )
                if cursor == 0 {
                    seeds.append(
                        (
                            "mapped-indirect-l\(selector)",
                            [DeviceFuzzer.mappedMarker, config, selector, cursor] + indirect + [8, 0, 3] + take
                        )
                    )
                }
            }
        }
        return seeds
    }

    /// Builds a device program: the driver's areas as a real driver left them after
    /// submitting `shape`, then take, complete with assorted lengths, notify, wait.
    static func deviceProgram(config: UInt8, size: Int, shape: [(readable: Int, writable: Int)]) -> [UInt8]? {
        var features: Features = []
        if config & 4 != 0 { features.insert(.indirectDescriptors) }
        if config & 8 != 0 { features.insert(.eventIndex) }
        guard let layout = try? RegionLayout(queueSizes: [size], dataAreaSize: 1024, features: features) else {
            return nil
        }
        let region = FuzzRegion(count: layout.regionSize)
        defer { region.deallocate() }
        guard (try? layout.initialize(region)) != nil else { return nil }
        do {
            var driver = try DriverQueue(region: region, notifier: FuzzNotifier(), bufferSize: 64, indirectThreshold: 2)
            for (number, chainShape) in shape.enumerated() {
                var chain = driver.makeChain()
                for segment in 0..<chainShape.readable {
                    try driver.appendReadable(
                        to: &chain,
                        copying: Array(repeating: UInt8(number * 16 + segment), count: 8 + segment)
                    )
                }
                for _ in 0..<chainShape.writable {
                    try driver.appendWritable(to: &chain, capacity: 32)
                }
                try driver.submit(chain)
            }
        } catch {
            return nil
        }
        var program: [UInt8] = [config]
        // The driver's areas as bus ranges, which in a region are offsets.
        guard let placement = try? layout.placement(ofQueue: 0), let data = placement.bufferArea else { return nil }
        let areas = (placement.areas.prefix(2).map(\.range) + [data.lowerBound..<data.lowerBound + 256]).map {
            Int($0.lowerBound)..<Int($0.upperBound)
        }
        var spaceOffset = 0
        for area in areas {
            var start = area.lowerBound
            while start < area.upperBound {
                let count = min(255, area.upperBound - start)
                let offset = spaceOffset + start - area.lowerBound
                program += [0, UInt8(offset & 0xFF), UInt8(offset >> 8), UInt8(count)]
                program += UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(region.bytes)[start..<start + count])
                start += count
            }
            spaceOffset += area.count
        }
        // take up to 4; complete with full, partial, too large; notify; wait; take again.
        program += [3, 3, 4, 0, 0x00, 4, 1, 0x45, 4, 0, 0x81, 5, 6, 1, 3, 0, 5]
        return program
    }

    /// Seeds for ``DriverFuzzer``: chains of several shapes submitted, completed by a
    /// well-behaved device, taken, kept and freed; plus a device that names a chain not in
    /// flight, overstates a length, or jumps `used.idx`.
    public static func driver() -> [Seed] {
        var seeds: [Seed] = []
        // Submit: [op, shape, lengths...]; complete: [3, selector, length selector]; take: [5, policy].
        let submitTwo: [UInt8] = [0, 0x05, 10, 20, 1, 0x0B, 5, 6, 7, 30, 40]
        let completeBoth: [UInt8] = [3, 0, 0x00, 3, 1, 0x45]
        let takeAll: [UInt8] = [5, 0x07, 6, 0, 7, 8, 1]
        for (sizeBits, size) in [(0, 4), (1, 8), (2, 16), (3, 1)] {
            for featureBits in [0, 4, 8, 12] {
                let config = UInt8(sizeBits | featureBits | 2 << 4 | 1 << 6)
                let count = UInt8(min(4 * size + 1, 12))
                seeds.append(
                    ("happy-n\(size)-f\(featureBits)", [config, count] + submitTwo + [7] + completeBoth + takeAll)
                )
            }
        }
        let config = UInt8(0 | 4 | 2 << 4 | 1 << 6)
        seeds.append(("not-in-flight", [config, 12] + submitTwo + [3, 0x80, 3, 0, 0, 0, 0x00, 5, 0]))
        seeds.append(("too-long", [config, 12] + submitTwo + [3, 0, 0x81, 5, 0]))
        seeds.append(("jump", [config, 12] + submitTwo + [4, 9, 0, 5, 0]))
        seeds.append(("twice", [config, 12] + submitTwo + [3, 0, 0x00, 5, 0, 4, 2, 0, 5, 0]))
        seeds.append(("wait-dies", [config, 12] + submitTwo + [8, 0, 0, 0x05, 1, 1]))
        seeds.append(("pool-exhausted", [config, 3] + submitTwo + submitTwo + completeBoth + takeAll))
        // The multi-mapping mode: pools across two or three mappings, some slots straddling a
        // boundary (left unused), buffer sizes 32 and 256, with and without a buffer area.
        for selector: UInt8 in [0x00, 0x05, 0x1A, 0x47, 0x8B, 0xE3] {
            for config: UInt8 in [UInt8(0 | 4 | 1 << 4 | 1 << 6), UInt8(1 | 12 | 3 << 4 | 2 << 6)] {
                seeds.append(
                    (
                        "mapped-l\(selector)-c\(config)",
                        [DriverFuzzer.mappedMarker, config, 11, selector] + submitTwo + [7] + completeBoth + takeAll
                    )
                )
            }
        }
        return seeds
    }

    /// Seeds for ``HeaderFuzzer``: headers ``RegionLayout/initialize(_:)`` wrote for a few
    /// layouts, one with a chain already in its ring, a packed one (sizes not powers of two), and
    /// a truncated one.
    public static func header() -> [Seed] {
        var seeds: [Seed] = []
        let layouts: [(String, [Int], Int, Features)] = [
            ("one-queue", [4], 128, []),
            ("two-queues", [2, 8], 256, [.eventIndex]),
            ("all-features", [16], 512, .all),
            ("four-queues", [1, 2, 4, 1], 64, [.indirectDescriptors]),
            ("packed", [3, 5], 128, [.ringPacked, .eventIndex]),
        ]
        for (name, sizes, dataSize, features) in layouts {
            guard let layout = try? RegionLayout(queueSizes: sizes, dataAreaSize: dataSize, features: features) else {
                continue
            }
            let region = FuzzRegion(count: layout.regionSize)
            defer { region.deallocate() }
            guard (try? layout.initialize(region)) != nil else { continue }
            if name == "all-features",
                var driver = try? DriverQueue(region: region, notifier: FuzzNotifier(), bufferSize: 32)
            {
                var chain = driver.makeChain()
                _ = try? driver.appendReadable(to: &chain, copying: [1, 2, 3, 4])
                _ = try? driver.appendWritable(to: &chain)
                _ = try? driver.submit(chain)
            }
            let bytes = Array(UnsafeRawBufferPointer(region.bytes))
            seeds.append((name, bytes))
            if name == "one-queue" {
                seeds.append(("truncated", Array(bytes.prefix(layout.regionSize - 1))))
            }
        }
        return seeds
    }
}
