import Synchronization
import Virtqueue

/// ``ConformanceCheck/notificationSuppression``: kicks counted with a ``CountingNotifier`` around
/// the backend's own notifiers, with VIRTIO_F_EVENT_IDX on and off.
enum SuppressionCheck {
    static let burst = 32

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        for features in Features.notificationModes {
            let layout = try context.makeLayout(queueSize: 64, dataAreaSize: 128 * 64, features: features)
            try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
                try backend.withQueueEnds(layout: layout, Visitor(layout: layout, context: context))
            }
        }
        return "a burst of \(burst) cost one kick each way, with and without EVENT_IDX"
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout
        let context: CheckContext

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws {
            try ends.initialize(layout)
            let mode = layout.features.modeName
            let unblock = ends.unblocker()
            let toDevice = CountingNotifier(ends.driver.notifier)
            let toDriver = CountingNotifier(ends.device.notifier)
            var driver = try attachDriver(ends.driver.region, notifier: toDevice, bufferSize: 64)
            var device = try attachDevice(ends.device.region, notifier: toDriver)
            let burst = SuppressionCheck.burst
            try withWatchdog(
                context,
                hang: { "\(mode): a wait for a kick that was sent did not return (stage \($0)): the kick was lost" },
                onFire: unblock
            ) { watchdog in
                var payloads: [UInt16: [UInt8]] = [:]
                func submit(_ index: Int, _ driver: inout DriverQueue<Region, CountingNotifier<Notify>>) throws {
                    var chain = driver.makeChain()
                    let payload = [UInt8(truncatingIfNeeded: index), 0x5A]
                    try driver.appendReadable(to: &chain, copying: payload)
                    try driver.appendWritable(to: &chain, capacity: 16)
                    payloads[try driver.submit(chain)] = payload
                }

                // Driver → device: the device has never waited, so the first submission kicks.
                try submit(0, &driver)
                try expect(try driver.notifyIfNeeded(), "\(mode): the first submission did not kick the idle device")
                // The device wakes up and polls; the rest of the burst must not kick.
                try device.waitForRequests(spins: 0)
                for index in 1..<burst {
                    try submit(index, &driver)
                    try expect(
                        try driver.notifyIfNeeded() == false,
                        "\(mode): submission \(index) of a burst kicked the device, which was awake"
                    )
                }
                try expect(
                    toDevice.kickCount == 1,
                    "\(mode): a burst of \(burst) submissions cost \(toDevice.kickCount) kicks; expected 1"
                )
                watchdog.report(1)
                try device.notifier.wait()  // the one kick was delivered

                // Device → driver: the first completion interrupts, the driver polls, the rest don't.
                var component = ConformanceDevice()
                for index in 0..<burst {
                    guard let request = try device.nextRequest() else {
                        throw CheckFailure("\(mode): the device found \(index) of \(burst) submitted chains")
                    }
                    let written = try component.handle(request, on: device)
                    try device.complete(request, written: written)
                    let kicked = try device.notifyIfNeeded()
                    if index == 0 {
                        try expect(
                            kicked,
                            "\(mode): the first completion did not notify the driver, which was not polling"
                        )
                        try driver.waitForUsed(spins: 0)
                    } else {
                        try expect(!kicked, "\(mode): completion \(index) notified the driver, which was polling")
                    }
                }
                try expect(
                    toDriver.kickCount == 1,
                    "\(mode): \(burst) completions cost \(toDriver.kickCount) interrupts; expected 1"
                )
                watchdog.report(2)
                try driver.notifier.wait()  // the one interrupt was delivered

                var returned = 0
                while let used = try driver.takeUsed() {
                    let expected = ConformanceDevice.reply(to: payloads[used.id] ?? [], room: 16)
                    var reply: [UInt8] = []
                    try driver.forEachSegment(of: used) { isWritable, bytes in if isWritable { reply += bytes } }
                    try expect(reply == expected, "\(mode): chain \(used.id) replied \(reply), expected \(expected)")
                    try driver.free(used)
                    returned += 1
                }
                try expect(returned == burst, "\(mode): \(returned) of \(burst) chains came back")
            }
        }
    }
}
