import Synchronization
import Virtqueue

/// ``ConformanceCheck/peerDeathMidFlight``: the device dies holding one request with more queued
/// behind it. A launched device that can be killed is killed; otherwise the suite runs the
/// device on a thread (``ThreadLaunch``) and "kills" it by closing the device's end.
enum PeerDeathCheck {
    /// Chains the device completes before the one it stalls on.
    static let completedFirst = 3
    /// Chains queued behind the stalled one.
    static let queuedBehind = 4

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try context.makeLayout(queueSize: 16, dataAreaSize: 64 * 64, features: .all)
        let launched = try attempt("withLaunchedDevice(layout:_:), or a queue call inside it,") {
            try backend.withLaunchedDevice(
                layout: layout,
                Launched(context: context, death: "the launched device was killed")
            )
        }
        if case .some(.some(let summary)) = launched { return summary }
        // The backend cannot launch a device, or cannot kill it: run one on a thread and stand
        // in for the kill by closing the device's end.
        let summary = try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
            try backend.withQueueEnds(
                layout: layout,
                ThreadLaunch(
                    layout: layout,
                    context: context,
                    visitor: Launched(context: context, death: "the device thread was killed (its end closed)")
                )
            )
        }
        guard let summary else { throw CheckFailure("the suite's own device thread offered no kill") }
        return summary
    }

    /// Kills a launched device mid-flight; returns `nil` if it cannot be killed.
    struct Launched: LaunchedDeviceVisitor {
        let context: CheckContext
        let death: String

        func visit<Region: GuestMemory & ~Copyable, Notify: Notifier>(
            _ device: consuming LaunchedDevice<Region, Notify>
        ) throws -> String? {
            let stop = device.stop
            guard let kill = device.kill else {
                try attempt("stopping the launched device") { try stop() }
                return nil
            }
            var driver = try attachDriver(device.region, notifier: device.notifier, bufferSize: 64)
            defer { try? stop() }  // after a kill the device's failure is expected: not checked
            try dieMidFlight(&driver, context, death: death, kill: kill)
            return "\(death) holding a chain; all \(1 + queuedBehind) in flight came back abandoned(peerDied)"
        }
    }

    static func dieMidFlight<Region: GuestMemory & ~Copyable, Notify: Notifier>(
        _ driver: inout DriverQueue<Region, Notify>,
        _ context: CheckContext,
        death: String,
        kill: @escaping @Sendable () throws -> Void
    ) throws {
        func submit(_ payload: [UInt8], _ driver: inout DriverQueue<Region, Notify>) throws -> UInt16 {
            var chain = driver.makeChain()
            try driver.appendReadable(to: &chain, copying: payload)
            try driver.appendWritable(to: &chain, capacity: 32)
            return try driver.submit(chain)
        }
        var first: Set<UInt16> = []
        for index in 0..<completedFirst { first.insert(try submit([UInt8(index), 1, 2, 3], &driver)) }
        let stalled = try submit(ConformanceDevice.stallMarker, &driver)
        var behind: Set<UInt16> = []
        for index in 0..<queuedBehind { behind.insert(try submit([UInt8(index), 4, 5, 6], &driver)) }
        try driver.notifyIfNeeded()

        // The device completes the first chains, then holds the stalled one.
        var completed: Set<UInt16> = []
        try withWatchdog(
            context,
            hang: { "only \($0) of the \(completedFirst) chains before the stalled one came back" },
            onFire: { try? kill() }
        ) { watchdog in
            while completed.count < completedFirst {
                try driver.waitForUsed()
                while let used = try driver.takeUsed() {
                    completed.insert(used.id)
                    try driver.free(used)
                }
                watchdog.report(completed.count)
            }
        }
        try expect(
            completed == first,
            "the device completed chains \(completed.sorted()) before stalling; expected \(first.sorted())"
        )

        try attempt("killing the device") { try kill() }
        // The driver's notifier must report the death: wait on it from a thread, bounded.
        let notifier = driver.notifier
        let waiterAbandoned = Atomic<Bool>(false)
        let waiter = BackgroundThread(name: "virtqueue-conformance-death-waiter") {
            while !waiterAbandoned.load(ordering: .acquiring) { try notifier.wait() }
        }
        switch waiter.join(timeout: context.timeout) {
        case .none:
            waiterAbandoned.store(true, ordering: .releasing)  // stop() wakes it, if anything can
            throw CheckFailure("\(death), but the driver's wait did not end within \(context.timeout)")
        case .some(.some(let error)):
            guard let error = error as? VirtqueueError, error.code == .peerDied else {
                throw CheckFailure("\(death); the driver's wait ended with \(error), not VirtqueueError.peerDied")
            }
        case .some(.none):
            throw CheckFailure("the waiter returned without an error")
        }
        // Now the queue's own wait reports it, and breaks the queue.
        _ = try expectError(.peerDied, "\(death): the driver's waitForUsed") { try driver.waitForUsed() }
        try expect(driver.isBroken, "\(death): the driver's queue is not broken after peerDied")
        var abandoned: Set<UInt16> = []
        while let chain = driver.takeAbandoned() {
            try expect(
                chain.status == .abandoned(.peerDied),
                "\(death): chain \(chain.id) came back \(chain.status), not abandoned(peerDied)"
            )
            abandoned.insert(chain.id)
            try driver.free(chain)
        }
        try expect(
            abandoned == behind.union([stalled]),
            "\(death): chains \(abandoned.sorted()) came back abandoned; \(behind.union([stalled]).sorted()) were in flight"
        )
        try expect(
            driver.inFlightCount == 0 && driver.freeBufferCount == driver.bufferCount,
            "\(death): \(driver.inFlightCount) chains in flight and \(driver.freeBufferCount) of \(driver.bufferCount) buffers free after taking everything back"
        )
    }
}
