import Virtqueue

/// ``ConformanceCheck/poolExhaustion``.
enum PoolExhaustionCheck {
    static let bufferCount = 6

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try context.makeLayout(queueSize: 16, dataAreaSize: bufferCount * 64, features: .all)
        return try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
            try backend.withQueueEnds(layout: layout, Visitor(layout: layout))
        }
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws -> String {
            try ends.initialize(layout)
            var driver = try attachDriver(ends.driver.region, notifier: ends.driver.notifier, bufferSize: 64)
            var device = try attachDevice(ends.device.region, notifier: ends.device.notifier)
            try expect(
                driver.bufferCount == PoolExhaustionCheck.bufferCount,
                "the pool has \(driver.bufferCount) buffers; expected \(PoolExhaustionCheck.bufferCount)"
            )
            var payloads: [UInt16: [UInt8]] = [:]
            func submit(_ seed: Int, _ driver: inout DriverQueue<Region, Notify>) throws {
                let payload = (0..<8).map { UInt8(truncatingIfNeeded: seed * 8 + $0) }
                var chain = driver.makeChain()
                try driver.appendReadable(to: &chain, copying: payload)
                try driver.appendWritable(to: &chain, capacity: 16)
                payloads[try driver.submit(chain)] = payload
            }
            for seed in 0..<3 { try submit(seed, &driver) }
            try expect(driver.freeBufferCount == 0, "\(driver.freeBufferCount) buffers free after using all six")

            var chain = driver.makeChain()
            _ = try expectError(.poolExhausted, "appending to a chain with the pool empty") {
                try driver.appendReadable(to: &chain, copying: [1])
            }
            try expect(chain.segmentCount == 0, "a refused append left \(chain.segmentCount) segments in the chain")
            try expect(!driver.isBroken, "an exhausted pool broke the queue")
            try driver.discard(chain)

            // One chain comes back; its two buffers can be used again.
            try serve(&device, count: 1)
            try takeAndCheck(&driver, payloads: payloads, count: 1)
            try expect(driver.freeBufferCount == 2, "\(driver.freeBufferCount) buffers free after one chain came back")
            try submit(3, &driver)
            try serve(&device, count: 3)
            try takeAndCheck(&driver, payloads: payloads, count: 3)
            try expect(
                driver.freeBufferCount == driver.bufferCount && driver.inFlightCount == 0,
                "\(driver.freeBufferCount) of \(driver.bufferCount) buffers free at the end"
            )
            return "a pool of \(PoolExhaustionCheck.bufferCount) buffers exhausted, refilled and drained"
        }

        func serve<Region: GuestMemory & ~Copyable, Notify: Notifier>(
            _ device: inout DeviceQueue<Region, Notify>,
            count: Int
        ) throws {
            var component = ConformanceDevice()
            for index in 0..<count {
                guard let request = try device.nextRequest() else {
                    throw CheckFailure("the device found \(index) of \(count) submitted chains")
                }
                let written = try component.handle(request, on: device)
                try device.complete(request, written: written)
            }
        }

        func takeAndCheck<Region: GuestMemory & ~Copyable, Notify: Notifier>(
            _ driver: inout DriverQueue<Region, Notify>,
            payloads: [UInt16: [UInt8]],
            count: Int
        ) throws {
            for index in 0..<count {
                guard let used = try driver.takeUsed() else {
                    throw CheckFailure("the driver took back \(index) of \(count) completed chains")
                }
                let expected = ConformanceDevice.reply(to: payloads[used.id] ?? [], room: 16)
                var reply: [UInt8] = []
                try driver.forEachSegment(of: used) { isWritable, bytes in if isWritable { reply += bytes } }
                try expect(
                    reply == expected,
                    "chain \(used.id): the reply reads back as \(reply), expected \(expected)"
                )
                try driver.free(used)
            }
        }
    }
}
