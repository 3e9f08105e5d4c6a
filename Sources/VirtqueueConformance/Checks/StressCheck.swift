import Synchronization
import Virtqueue

/// ``ConformanceCheck/concurrentStress``: the driver on this thread, a ``ConformanceDevice``
/// wherever the backend launches devices (or on a thread of the suite's, ``ThreadLaunch``), a
/// million checksummed chains.
enum StressCheck {
    static let queueSize = 256
    static let bufferSize = 64
    static let replyRoom = 16

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try context.makeLayout(
            queueSize: queueSize,
            dataAreaSize: 2 * queueSize * bufferSize,
            features: .all
        )
        let clock = ContinuousClock()
        let start = clock.now
        let launched = try attempt("withLaunchedDevice(layout:_:), or a queue call inside it,") {
            try backend.withLaunchedDevice(layout: layout, Launched(context: context))
        }
        let kicks: Int
        let path: String
        if let launched {
            kicks = launched
            path = "the backend's launched device"
        } else {
            kicks = try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
                try backend.withQueueEnds(
                    layout: layout,
                    ThreadLaunch(layout: layout, context: context, visitor: Launched(context: context))
                )
            }
            path = "a device thread of the suite's"
        }
        let elapsed = clock.now - start
        let milliseconds = elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
        let count = context.configuration.stressChainCount
        return
            "\(count) chains (\(2 * count) buffers) through \(path) in \(milliseconds) ms, \(kicks) kicks to the device"
    }

    /// The device runs where the backend launches it.
    struct Launched: LaunchedDeviceVisitor {
        let context: CheckContext

        func visit<Region: GuestMemory & ~Copyable, Notify: Notifier>(
            _ device: consuming LaunchedDevice<Region, Notify>
        ) throws -> Int {
            let stop = device.stop
            let kill = device.kill
            let notifier = CountingNotifier(device.notifier)
            var driver = try attachDriver(device.region, notifier: notifier, bufferSize: StressCheck.bufferSize)
            do {
                try pump(&driver, context) {
                    if let kill { try? kill() } else { try? stop() }
                }
            } catch {
                if let kill { try? kill() }
                try? stop()
                throw error
            }
            try attempt("stopping the launched device") { try stop() }
            return notifier.kickCount
        }
    }

    /// Submits `stressChainCount` chains in batches — each a readable payload of 8 to 32 bytes
    /// (a sequence number, then a pattern) and a 16-byte writable reply buffer — and checks each
    /// reply's checksum, length and echo.
    static func pump<Region: GuestMemory & ~Copyable, Notify: Notifier>(
        _ driver: inout DriverQueue<Region, Notify>,
        _ context: CheckContext,
        unblock: @escaping @Sendable () -> Void
    ) throws {
        let total = context.configuration.stressChainCount
        var expectedChecksum = [UInt64](repeating: 0, count: driver.queueSize)
        var expectedLength = [UInt32](repeating: 0, count: driver.queueSize)
        var expectedSequence = [UInt32](repeating: 0, count: driver.queueSize)
        var sent = 0
        var received = 0
        try withWatchdog(
            context,
            hang: { "no chain came back for \(context.timeout) after \($0) of \(total)" },
            onFire: unblock
        ) { watchdog in
            while received < total {
                while sent < total, driver.freeDescriptorCount >= 2, driver.freeBufferCount >= 2 {
                    var chain = driver.makeChain()
                    let sequence = UInt64(sent)
                    let length = 8 + sent % 25
                    var checksum: UInt64 = 0
                    try driver.appendReadable(to: &chain, count: length) { bytes in
                        bytes.storeBytes(of: sequence.littleEndian, as: UInt64.self)
                        for index in 8..<length { bytes[index] = UInt8(truncatingIfNeeded: sent &+ index) }
                        checksum = ConformanceDevice.checksum(UnsafeRawBufferPointer(bytes))
                    }
                    try driver.appendWritable(to: &chain, capacity: replyRoom)
                    let head = Int(try driver.submit(chain))
                    expectedChecksum[head] = checksum
                    expectedLength[head] = UInt32(length)
                    expectedSequence[head] = UInt32(truncatingIfNeeded: sequence)
                    sent += 1
                }
                try driver.notifyIfNeeded()
                try driver.waitForUsed()
                while let used = try driver.takeUsed() {
                    let head = Int(used.id)
                    var reply: (checksum: UInt64, length: UInt32, echo: UInt32) = (0, 0, 0)
                    try driver.forEachSegment(of: used) { isWritable, bytes in
                        guard isWritable, bytes.count == replyRoom else { return }
                        reply = (
                            UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self)),
                            UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                            UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
                        )
                    }
                    guard used.writtenByteCount == replyRoom, reply.checksum == expectedChecksum[head],
                        reply.length == expectedLength[head], reply.echo == expectedSequence[head]
                    else {
                        throw CheckFailure(
                            "chain \(received) (id \(head)): reply of \(used.writtenByteCount) bytes \(reply); expected \(replyRoom) bytes (0x\(String(expectedChecksum[head], radix: 16)), \(expectedLength[head]), \(expectedSequence[head]))"
                        )
                    }
                    try driver.free(used)
                    received += 1
                }
                watchdog.report(received)
            }
        }
        try expect(
            driver.freeBufferCount == driver.bufferCount && driver.inFlightCount == 0,
            "\(driver.freeBufferCount) of \(driver.bufferCount) buffers free after \(total) chains"
        )
    }
}
