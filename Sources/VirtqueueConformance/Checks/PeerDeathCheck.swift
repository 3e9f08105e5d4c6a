import Dispatch
import Synchronization
import Virtqueue

/// ``ConformanceCheck/peerDeathMidFlight``: the device dies holding one request with more queued
/// behind it. A launched device that can be killed is killed; otherwise the suite runs the
/// device on a thread and "kills" it by closing the device's end.
enum PeerDeathCheck {
    /// Chains the device completes before the one it stalls on.
    static let completedFirst = 3
    /// Chains queued behind the stalled one.
    static let queuedBehind = 4

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try makeLayout(queueSize: 16, dataAreaSize: 64 * 64, features: .all)
        let launched = try attempt("withLaunchedDevice(layout:_:), or a queue call inside it,") {
            try backend.withLaunchedDevice(layout: layout, Launched(context: context))
        }
        if case .some(.some(let summary)) = launched { return summary }
        return try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
            try backend.withQueueEnds(layout: layout, Threaded(layout: layout, context: context))
        }
    }

    /// A launched device, killed; `nil` if the backend cannot kill it.
    struct Launched: LaunchedDeviceVisitor {
        let context: CheckContext

        func visit<Region: MemoryRegion & ~Copyable, Notify: Notifier>(
            _ device: consuming LaunchedDevice<Region, Notify>
        ) throws -> String? {
            let stop = device.stop
            guard let kill = device.kill else {
                try attempt("stopping the launched device") { try stop() }
                return nil
            }
            var driver = try attachDriver(device.region, notifier: device.notifier, bufferSize: 64)
            defer { try? stop() }  // after a kill the device's failure is expected: not checked
            try dieMidFlight(&driver, context, death: "the launched device was killed", release: nil, kill: kill)
            return
                "the launched device was killed holding a chain; all \(1 + queuedBehind) in flight came back abandoned(peerDied)"
        }
    }

    /// A device thread of the suite's, "killed" by closing the device's end.
    struct Threaded: QueueEndsVisitor {
        let layout: RegionLayout
        let context: CheckContext

        func visit<Region: MemoryRegion & ~Copyable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws -> String {
            try ends.initialize(layout)
            let closeDriver = ends.driver.close
            let closeDevice = ends.device.close
            let unblock = ends.unblocker()
            var driver = try attachDriver(ends.driver.region, notifier: ends.driver.notifier, bufferSize: 64)
            let killSwitch = KillSwitch()
            let deviceThread = startDeviceThread(
                region: ends.device.region,
                notifier: KillableNotifier(base: ends.device.notifier, killSwitch: killSwitch),
                spins: 256
            )
            do {
                try dieMidFlight(&driver, context, death: "the device's end was closed", release: unblock) {
                    killSwitch.kill()
                    closeDevice()
                }
            } catch {
                killSwitch.release()
                closeDriver()
                _ = deviceThread.join(timeout: context.timeout)
                throw error
            }
            // Let the "dead" device thread go: it returns once it sees the driver gone.
            killSwitch.release()
            closeDriver()
            try joinDevice(deviceThread, context)
            return
                "the device (a thread) died holding a chain — its end closed; all \(1 + queuedBehind) in flight came back abandoned(peerDied)"
        }
    }

    static func dieMidFlight<Region: MemoryRegion & ~Copyable, Notify: Notifier>(
        _ driver: inout DriverQueue<Region, Notify>,
        _ context: CheckContext,
        death: String,
        release: (@Sendable () -> Void)?,
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
            waiterAbandoned.store(true, ordering: .releasing)
            release?()  // wake the waiter if the backend's kicks still work
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

/// Stands in for killing a device thread, which cannot be killed: once killed, the device's
/// notifier never returns to it — the thread stays parked, touching nothing, as a dead process
/// would — until the check releases it at the end.
final class KillSwitch: Sendable {
    private let killed = Atomic<Bool>(false)
    private let released = DispatchSemaphore(value: 0)

    var isKilled: Bool { killed.load(ordering: .acquiring) }

    func kill() { killed.store(true, ordering: .releasing) }

    func release() { released.signal() }

    /// Parks the calling thread until ``release()``.
    func park() {
        released.wait()
        released.signal()
    }
}

/// The device's notifier in the emulated death: passes everything through to `base` until the
/// kill, then parks the device thread.
struct KillableNotifier<Base: Notifier>: Notifier {
    let base: Base
    let killSwitch: KillSwitch

    func notify() throws(VirtqueueError) {
        try parkIfKilled()
        try base.notify()
    }

    func wait() throws(VirtqueueError) {
        try parkIfKilled()
        do {
            try base.wait()
        } catch {
            try parkIfKilled()
            throw error
        }
        try parkIfKilled()
    }

    private func parkIfKilled() throws(VirtqueueError) {
        guard killSwitch.isKilled else { return }
        killSwitch.park()
        throw VirtqueueError(.peerDied, "this device was killed")
    }
}
