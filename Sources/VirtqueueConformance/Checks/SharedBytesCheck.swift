import Virtqueue

/// ``ConformanceCheck/regionEndsShareBytes``.
enum SharedBytesCheck {
    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try makeLayout(queueSize: 256, dataAreaSize: 1 << 16, features: .all)
        return try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
            try backend.withQueueEnds(layout: layout, Visitor(layout: layout))
        }
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout

        func visit<Region: MemoryRegion & ~Copyable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws -> String {
            let size = layout.regionSize
            for (name, count, address) in [
                ("driver", ends.driver.region.count, baseAddress(of: ends.driver.region)),
                ("device", ends.device.region.count, baseAddress(of: ends.device.region)),
            ] {
                try expect(count >= size, "the \(name)'s region has \(count) bytes; the layout needs \(size)")
                try expect(
                    address % 16 == 0,
                    "the \(name)'s region starts at 0x\(String(address, radix: 16)), which is not 16-byte aligned"
                )
            }
            try copy(
                from: ends.driver.region,
                to: ends.device.region,
                size: size,
                seed: 7,
                direction: "driver → device"
            )
            try copy(
                from: ends.device.region,
                to: ends.driver.region,
                size: size,
                seed: 91,
                direction: "device → driver"
            )
            return "\(size) bytes written and read back in both directions"
        }

        func baseAddress<Region: MemoryRegion & ~Copyable>(of region: borrowing Region) -> UInt {
            region.withUnsafeMutableBytes { UInt(bitPattern: $0.baseAddress) }
        }

        /// Writes a pattern over the first `size` bytes of `source`, then reads every byte back
        /// through `destination`.
        func copy<Region: MemoryRegion & ~Copyable>(
            from source: borrowing Region,
            to destination: borrowing Region,
            size: Int,
            seed: UInt8,
            direction: String
        ) throws {
            func pattern(_ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: offset &* 31) &+ seed }
            source.withUnsafeMutableBytes { raw in
                for offset in 0..<size { raw[offset] = pattern(offset) }
            }
            let mismatch: (offset: Int, byte: UInt8)? = destination.withUnsafeMutableBytes { raw in
                for offset in [0, size / 2, size - 1] + Array(0..<size) where raw[offset] != pattern(offset) {
                    return (offset, raw[offset])
                }
                return nil
            }
            if let mismatch {
                throw CheckFailure(
                    "\(direction): byte \(mismatch.offset) was written as \(pattern(mismatch.offset)) but reads back as \(mismatch.byte): the two ends are not the same memory"
                )
            }
        }
    }
}
