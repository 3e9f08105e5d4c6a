import Synchronization
import Virtqueue

/// ``ConformanceCheck/noLostWakeUp``: driver and device on two threads, both sleeping on the
/// backend's real notifier whenever the ring is empty (no spinning), so every round trip needs a
/// kick each way to be delivered.
enum LostWakeUpCheck {
    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        var kicks: [Int] = []
        for features in Features.notificationModes {
            let layout = try context.makeLayout(queueSize: 16, dataAreaSize: 64 * 64, features: features)
            kicks.append(
                try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
                    try backend.withQueueEnds(layout: layout, Visitor(layout: layout, context: context))
                }
            )
        }
        return "\(context.configuration.wakeUpRoundTrips) round trips with and without EVENT_IDX, \(kicks) kicks"
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout
        let context: CheckContext

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws -> Int {
            try ends.initialize(layout)
            let mode = layout.features.modeName
            let closeDriver = ends.driver.close
            let unblock = ends.unblocker()
            let toDevice = CountingNotifier(ends.driver.notifier)
            var driver = try attachDriver(ends.driver.region, notifier: toDevice, bufferSize: 64)
            let deviceThread = startDeviceThread(region: ends.device.region, notifier: ends.device.notifier, spins: 0)
            let rounds = context.configuration.wakeUpRoundTrips
            do {
                try withWatchdog(
                    context,
                    hang: {
                        "\(mode): round trip \($0) of \(rounds) never completed — driver and device both asleep: a wake-up was lost"
                    },
                    onFire: unblock
                ) { watchdog in
                    var expected = [UInt64](repeating: 0, count: driver.queueSize)
                    for round in 0..<rounds {
                        watchdog.report(round + 1)
                        let batch = round % 4 == 3 ? 3 : 1
                        for index in 0..<batch {
                            var chain = driver.makeChain()
                            let payload = [UInt8(truncatingIfNeeded: round), UInt8(truncatingIfNeeded: index), 0xA5]
                            try driver.appendReadable(to: &chain, copying: payload)
                            try driver.appendWritable(to: &chain, capacity: 16)
                            expected[Int(try driver.submit(chain))] = ConformanceDevice.checksum(payload)
                        }
                        try driver.notifyIfNeeded()
                        var received = 0
                        while received < batch {
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
                                    "\(mode): round \(round): chain \(used.id) came back with a wrong checksum"
                                )
                                try driver.free(used)
                                received += 1
                            }
                        }
                    }
                }
            } catch {
                closeDriver()
                _ = deviceThread.join(timeout: context.timeout)
                throw error
            }
            closeDriver()
            try joinDevice(deviceThread, context)
            try expect(
                toDevice.kickCount >= 1,
                "\(mode): the driver never kicked, so the device never slept and nothing was tested"
            )
            return toDevice.kickCount
        }
    }
}
