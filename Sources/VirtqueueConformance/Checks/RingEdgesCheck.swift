import Virtqueue

/// ``ConformanceCheck/ringFullAndEmpty``.
enum RingEdgesCheck {
    static let queueSize = 8

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try context.makeLayout(queueSize: queueSize, dataAreaSize: 16 * 64, features: [])
        return try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
            try backend.withQueueEnds(layout: layout, Visitor(layout: layout))
        }
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws -> String {
            let inOrder = layout.features.contains(.inOrder)
            try ends.initialize(layout)
            var driver = try attachDriver(ends.driver.region, notifier: ends.driver.notifier, bufferSize: 64)
            var device = try attachDevice(ends.device.region, notifier: ends.device.notifier)
            let size = RingEdgesCheck.queueSize
            try expectEmpty(&driver, &device, "before anything was submitted")
            try driver.waitForUsed(spins: 0)  // nothing in flight: returns at once
            let rounds = 3
            for round in 0..<rounds {
                var ids: [UInt16] = []
                for index in 0..<size {
                    var chain = driver.makeChain()
                    try driver.appendReadable(to: &chain, copying: [UInt8(truncatingIfNeeded: round * size + index)])
                    ids.append(try driver.submit(chain))
                }
                try expect(
                    driver.freeDescriptorCount == 0,
                    "round \(round): \(driver.freeDescriptorCount) descriptors free after \(size) one-descriptor chains"
                )
                var extra = driver.makeChain()
                _ = try expectError(.ringFull, "round \(round): a chain on a full ring") {
                    try driver.appendReadable(to: &extra, copying: [0xFF])
                }
                try driver.discard(extra)
                try expect(!driver.isBroken, "round \(round): a full ring broke the queue")

                // The device takes all N and completes them in reverse order.
                var seen: [UInt8] = []
                try takeAllThenCompleteInReverse(&device, seen: &seen, remaining: size, round: round)
                let expectedPayloads = (0..<size).map { UInt8(truncatingIfNeeded: round * size + $0) }
                try expect(
                    seen == expectedPayloads,
                    "round \(round): the device saw payloads \(seen), expected \(expectedPayloads)"
                )

                var returned: [UInt16] = []
                while let used = try driver.takeUsed() {
                    returned.append(used.id)
                    try driver.free(used)
                }
                try expect(
                    returned == (inOrder ? ids : ids.reversed()),
                    "round \(round): the driver took back ids \(returned); the device completed \(Array(ids.reversed()))"
                        + (inOrder ? ", which under IN_ORDER it uses in the order made available, \(ids)" : "")
                )
                try expect(
                    driver.freeDescriptorCount == size && driver.freeBufferCount == driver.bufferCount,
                    "round \(round): \(driver.freeDescriptorCount) descriptors and \(driver.freeBufferCount) of \(driver.bufferCount) buffers free after every chain came back"
                )
                try expectEmpty(&driver, &device, "after round \(round)")
            }
            return "\(rounds) rounds of filling a ring of \(size) and draining it in reverse order"
                + (inOrder ? " (IN_ORDER: taken back in the order made available)" : "")
        }

        func expectEmpty<Region: GuestMemory & ~Copyable, Notify: Notifier>(
            _ driver: inout DriverQueue<Region, Notify>,
            _ device: inout DeviceQueue<Region, Notify>,
            _ when: String
        ) throws {
            if let used = try driver.takeUsed() {
                throw CheckFailure("\(when): the empty used ring returned chain \(used.id)")
            }
            if let request = try device.nextRequest() {
                throw CheckFailure("\(when): the empty available ring returned chain \(request.id)")
            }
        }

        /// Takes `remaining` requests, one per level of recursion, checks the ring is then empty,
        /// and completes them on the way back: the last taken is completed first.
        func takeAllThenCompleteInReverse<Region: GuestMemory & ~Copyable, Notify: Notifier>(
            _ device: inout DeviceQueue<Region, Notify>,
            seen: inout [UInt8],
            remaining: Int,
            round: Int
        ) throws {
            guard remaining > 0 else {
                if let request = try device.nextRequest() {
                    throw CheckFailure("round \(round): the device took chain \(request.id) beyond the queue size")
                }
                return
            }
            guard let request = try device.nextRequest() else {
                throw CheckFailure(
                    "round \(round): the device found only \(RingEdgesCheck.queueSize - remaining) of \(RingEdgesCheck.queueSize) chains"
                )
            }
            try device.forEachReadable(in: request) { seen += $0 }
            try takeAllThenCompleteInReverse(&device, seen: &seen, remaining: remaining - 1, round: round)
            try device.complete(request, written: 0)
        }
    }
}
