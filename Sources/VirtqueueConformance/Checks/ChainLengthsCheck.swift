import Virtqueue

/// ``ConformanceCheck/chainLengths``.
enum ChainLengthsCheck {
    static let queueSize = 16

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        // Direct: no VIRTIO_F_INDIRECT_DESC, so a chain of k segments takes k descriptors.
        let direct = try context.makeLayout(queueSize: queueSize, dataAreaSize: 20 * 64, features: [.eventIndex])
        try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
            try backend.withQueueEnds(layout: direct, Visitor(layout: direct, bufferSize: 64, indirect: false))
        }
        // Indirect: every chain of two or more segments goes through a table (threshold 1).
        let indirect = try context.makeLayout(queueSize: queueSize, dataAreaSize: 20 * 256, features: .all)
        try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
            try backend.withQueueEnds(layout: indirect, Visitor(layout: indirect, bufferSize: 256, indirect: true))
        }
        return "chains of 1…\(queueSize) segments, direct and indirect"
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout
        let bufferSize: Int
        let indirect: Bool

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws {
            try ends.initialize(layout)
            var driver = try attachDriver(
                ends.driver.region,
                notifier: ends.driver.notifier,
                bufferSize: bufferSize,
                indirectThreshold: indirect ? 1 : 16
            )
            var device = try attachDevice(ends.device.region, notifier: ends.device.notifier)
            let mode = indirect ? "indirect" : "direct"
            var component = ConformanceDevice()
            for length in 1...ChainLengthsCheck.queueSize {
                let readableCount = (length + 1) / 2
                let writableCount = length - readableCount
                let segments = (0..<readableCount).map { index in
                    (0..<(index % 5 + 1)).map { UInt8(truncatingIfNeeded: length * 16 + index * 5 + $0) }
                }
                var chain = driver.makeChain()
                for segment in segments { try driver.appendReadable(to: &chain, copying: segment) }
                for _ in 0..<writableCount { try driver.appendWritable(to: &chain, capacity: 16) }
                let goesIndirect = indirect && length >= 2
                try expect(
                    chain.isIndirect == goesIndirect,
                    "\(mode) chain of \(length): isIndirect is \(chain.isIndirect)"
                )
                let id = try driver.submit(chain)
                let descriptorsUsed = goesIndirect ? 1 : length
                try expect(
                    driver.freeDescriptorCount == ChainLengthsCheck.queueSize - descriptorsUsed,
                    "\(mode) chain of \(length) left \(driver.freeDescriptorCount) descriptors free; expected \(ChainLengthsCheck.queueSize - descriptorsUsed)"
                )

                guard let request = try device.nextRequest() else {
                    throw CheckFailure("\(mode) chain of \(length): the device found no available entry")
                }
                let readableBytes = segments.reduce(0) { $0 + $1.count }
                try expect(
                    request.id == id && request.segmentCount == length && request.readableByteCount == readableBytes
                        && request.writableByteCount == 16 * writableCount,
                    "\(mode) chain of \(length): the device saw id \(request.id), \(request.segmentCount) segments, \(request.readableByteCount) readable and \(request.writableByteCount) writable bytes; expected \(id), \(length), \(readableBytes), \(16 * writableCount)"
                )
                let written = try component.handle(request, on: device)
                try device.complete(request, written: written)

                guard let used = try driver.takeUsed() else {
                    throw CheckFailure("\(mode) chain of \(length): the driver found no used entry")
                }
                let expected = ConformanceDevice.reply(to: segments.flatMap { $0 }, room: 16 * writableCount)
                var readable: [[UInt8]] = []
                var reply: [UInt8] = []
                try driver.forEachSegment(of: used) { isWritable, bytes in
                    if isWritable { reply += bytes } else { readable.append(Array(bytes)) }
                }
                try expect(
                    used.writtenByteCount == expected.count && reply == expected && readable == segments,
                    "\(mode) chain of \(length): read back \(readable) and a reply of \(used.writtenByteCount) bytes \(reply); expected \(segments) and \(expected)"
                )
                try driver.free(used)
                try expect(
                    driver.freeDescriptorCount == ChainLengthsCheck.queueSize
                        && driver.freeBufferCount == driver.bufferCount,
                    "\(mode) chain of \(length): \(driver.freeDescriptorCount) descriptors and \(driver.freeBufferCount) of \(driver.bufferCount) buffers free after it came back"
                )
            }
        }
    }
}
