import Virtqueue

/// ``ConformanceCheck/regionEndsShareBytes``.
enum SharedBytesCheck {
    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try context.makeLayout(queueSize: 256, dataAreaSize: 1 << 16, features: .all)
        return try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
            try backend.withQueueEnds(layout: layout, Visitor(layout: layout))
        }
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws -> String {
            let size = layout.regionSize
            for (name, mappings) in [
                ("driver", try ends.driver.region.validatedMappings()),
                ("device", try ends.device.region.validatedMappings()),
            ] {
                var covered: UInt64 = 0
                for range in mappings where range.lowerBound <= covered && range.upperBound > covered {
                    covered = range.upperBound
                }
                try expect(
                    covered >= UInt64(size),
                    "the \(name)'s memory maps \(covered) bytes from bus address 0 without a gap; the layout needs \(size)"
                )
            }
            let headerAddress = try ends.driver.region.withBytes(at: 0, count: 16) { UInt(bitPattern: $0.baseAddress) }
            try expect(
                headerAddress % 16 == 0,
                "the driver's memory maps bus address 0 at 0x\(String(headerAddress, radix: 16)), which is not 16-byte aligned"
            )
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

        /// Calls `body` with each piece of bus addresses `0..<size` of `memory`, one per mapping.
        func forEachPiece<Region: GuestMemory & ~Copyable>(
            of memory: borrowing Region,
            size: Int,
            _ body: (Int, UnsafeMutableRawBufferPointer) throws -> Void
        ) throws {
            for range in try memory.validatedMappings() where range.lowerBound < UInt64(size) {
                let count = Int(min(range.upperBound, UInt64(size)) - range.lowerBound)
                let bytes = try memory.withBytes(at: range.lowerBound, count: count) { $0 }
                try body(Int(range.lowerBound), bytes)
            }
        }

        /// Writes a pattern over the first `size` bytes of `source`, then reads every byte back
        /// through `destination`.
        func copy<Region: GuestMemory & ~Copyable>(
            from source: borrowing Region,
            to destination: borrowing Region,
            size: Int,
            seed: UInt8,
            direction: String
        ) throws {
            func pattern(_ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: offset &* 31) &+ seed }
            try forEachPiece(of: source, size: size) { start, raw in
                for index in raw.indices { raw[index] = pattern(start + index) }
            }
            var mismatch: (offset: Int, byte: UInt8)?
            try forEachPiece(of: destination, size: size) { start, raw in
                for index in raw.indices where mismatch == nil && raw[index] != pattern(start + index) {
                    mismatch = (start + index, raw[index])
                }
            }
            if let mismatch {
                throw CheckFailure(
                    "\(direction): byte \(mismatch.offset) was written as \(pattern(mismatch.offset)) but reads back as \(mismatch.byte): the two ends are not the same memory"
                )
            }
        }
    }
}
