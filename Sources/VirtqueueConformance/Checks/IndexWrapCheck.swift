import Synchronization
import Virtqueue

/// ``ConformanceCheck/indexWrap``.
enum IndexWrapCheck {
    /// More than 2^16, so both free-running indices wrap.
    static let chainCount = 70_000

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try context.makeLayout(queueSize: 8, dataAreaSize: 16 * 32, features: .all)
        try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
            try backend.withQueueEnds(layout: layout, Visitor(layout: layout, context: context))
        }
        return context.ringFormat == .packed
            ? "\(chainCount) chains through a packed queue of 8: both wrap counters flipped \(2 * chainCount / 8) times"
            : "\(chainCount) chains through a queue of 8: avail.idx and used.idx wrapped"
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout

        let context: CheckContext

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws {
            try ends.initialize(layout)
            let unblock = ends.unblocker()
            var driver = try attachDriver(ends.driver.region, notifier: ends.driver.notifier, bufferSize: 32)
            var device = try attachDevice(ends.device.region, notifier: ends.device.notifier)
            var component = ConformanceDevice()
            var expected = [UInt64](repeating: 0, count: driver.queueSize)
            var sent = 0
            var received = 0
            let total = IndexWrapCheck.chainCount
            try withWatchdog(
                context,
                hang: { "chain \($0) of \(total) never arrived: a wait blocked" },
                onFire: unblock
            ) { watchdog in
                while received < total {
                    watchdog.report(received)
                    while sent < total, driver.freeDescriptorCount >= 2, driver.freeBufferCount >= 2 {
                        var chain = driver.makeChain()
                        let sequence = UInt64(sent)
                        try driver.appendReadable(to: &chain, count: 8) {
                            $0.storeBytes(of: sequence.littleEndian, as: UInt64.self)
                        }
                        try driver.appendWritable(to: &chain, capacity: 16)
                        let head = try driver.submit(chain)
                        expected[Int(head)] = withUnsafeBytes(of: sequence.littleEndian) {
                            ConformanceDevice.checksum($0)
                        }
                        sent += 1
                    }
                    try driver.notifyIfNeeded()
                    try device.waitForRequests(spins: 0)
                    while let request = try device.nextRequest() {
                        let written = try component.handle(request, on: device)
                        try device.complete(request, written: written)
                    }
                    try device.notifyIfNeeded()
                    try driver.waitForUsed(spins: 0)
                    while let used = try driver.takeUsed() {
                        var checksum: UInt64 = 0
                        try driver.forEachSegment(of: used) { isWritable, bytes in
                            if isWritable, bytes.count >= 8 {
                                checksum = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
                            }
                        }
                        try expect(
                            checksum == expected[Int(used.id)],
                            "chain \(received) (id \(used.id)): the device's checksum 0x\(String(checksum, radix: 16)) does not match the payload's 0x\(String(expected[Int(used.id)], radix: 16))"
                        )
                        try driver.free(used)
                        received += 1
                    }
                }
            }
            try expect(
                driver.freeBufferCount == driver.bufferCount && driver.inFlightCount == 0,
                "\(driver.freeBufferCount) of \(driver.bufferCount) buffers free after \(total) chains"
            )
        }
    }
}
