import Dispatch
import Foundation
import Synchronization
import Virtqueue

/// Hands a value, copyable or not, to another thread, which takes it out once.
///
/// The value must be `Sendable`: the box is a `Mutex`, checked by the compiler, not a promise
/// the suite makes on the value's behalf. (A `~Copyable` value cannot be captured by the
/// thread's escaping closure, so it travels in a box.)
final class Handoff<Value: ~Copyable & Sendable>: Sendable {
    private let slot: Mutex<Value?>

    init(_ value: consuming Value) {
        slot = Mutex(Optional(value))
    }

    /// Takes the value out.
    ///
    /// - Throws: ``CheckFailure`` naming `what` if it was taken already.
    func take(_ what: String) throws(CheckFailure) -> Value {
        let taken = slot.withLock { $0.take() }
        switch consume taken {
        case .some(let value): return value
        case .none: throw CheckFailure("the suite took \(what) out of its hand-off twice")
        }
    }
}

/// A thread the suite starts and joins, with what its body threw.
final class BackgroundThread: Sendable {
    private let finished = DispatchSemaphore(value: 0)
    private let outcome = Mutex<(done: Bool, error: (any Error)?)>((false, nil))

    /// Starts `body` on a new thread.
    init(name: String, _ body: @escaping @Sendable () throws -> Void) {
        let thread = Thread { [self] in
            var failure: (any Error)?
            do { try body() } catch { failure = error }
            outcome.withLock { $0 = (true, failure) }
            finished.signal()
        }
        thread.name = name
        thread.start()
    }

    /// Starts `body.run()` on a new thread.
    convenience init(name: String, _ body: any ThreadBody) {
        self.init(name: name) { try body.run() }
    }

    /// Waits up to `timeout` for the thread to finish.
    ///
    /// - Returns: `nil` if it did not finish in time; otherwise what its body threw, if anything
    ///   (`.some(nil)` for a clean return).
    func join(timeout: Duration) -> (any Error)?? {
        if finished.wait(timeout: .now() + timeout.dispatchInterval) == .timedOut { return .none }
        finished.signal()
        return .some(outcome.withLock { $0.error })
    }
}

/// Fires `onFire` once if the check makes no progress for `timeout`: the suite's defence
/// against a backend that loses a wake-up or never ends a wait. `onFire` closes ends and kicks,
/// so that whatever was blocked returns and the check can report the hang instead of hanging.
///
/// Progress is each call to ``report(_:)``; a slow machine that keeps reporting is never cut off.
final class Watchdog: Sendable {
    private let disarmed = DispatchSemaphore(value: 0)
    private let firedFlag = Atomic<Bool>(false)
    private let ticks = Atomic<Int>(0)
    private let position = Atomic<Int>(0)
    let timeout: Duration

    init(timeout: Duration, onFire: @escaping @Sendable () -> Void) {
        self.timeout = timeout
        let thread = Thread { [self] in
            var seen = ticks.load(ordering: .relaxed)
            while disarmed.wait(timeout: .now() + timeout.dispatchInterval) == .timedOut {
                let now = ticks.load(ordering: .relaxed)
                if now == seen {
                    firedFlag.store(true, ordering: .sequentiallyConsistent)
                    onFire()
                    return
                }
                seen = now
            }
        }
        thread.name = "virtqueue-conformance-watchdog"
        thread.start()
    }

    /// Records progress: the check has reached `position` (a count, a round, a step), for the
    /// failure message.
    func report(_ position: Int) {
        self.position.store(position, ordering: .relaxed)
        ticks.add(1, ordering: .relaxed)
    }

    /// The position last reported.
    var progress: Int { position.load(ordering: .relaxed) }

    var fired: Bool { firedFlag.load(ordering: .sequentiallyConsistent) }

    func disarm() { disarmed.signal() }
}

/// Runs `body` under a watchdog. If the watchdog fires — `body` made no progress for the
/// suite's timeout — the check fails with `hang`, whatever `body` returned or threw after
/// `onFire` unblocked it.
func withWatchdog<T: ~Copyable>(
    _ context: CheckContext,
    hang: @escaping (_ progress: Int) -> String,
    onFire: @escaping @Sendable () -> Void,
    fileID: String = #fileID,
    line: Int = #line,
    _ body: (Watchdog) throws -> T
) throws -> T {
    let watchdog = Watchdog(timeout: context.timeout, onFire: onFire)
    defer { watchdog.disarm() }
    let result: T
    do {
        result = try body(watchdog)
    } catch {
        if watchdog.fired {
            throw CheckFailure(
                "no progress for \(context.timeout): \(hang(watchdog.progress)) (then: \(error))",
                fileID: fileID,
                line: line
            )
        }
        throw error
    }
    if watchdog.fired {
        throw CheckFailure(
            "no progress for \(context.timeout): \(hang(watchdog.progress))",
            fileID: fileID,
            line: line
        )
    }
    return result
}

extension Duration {
    var dispatchInterval: DispatchTimeInterval {
        let (seconds, attoseconds) = components
        return .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    }
}

/// Starts a ``ConformanceDevice`` on a thread of this process, serving queue 0 of `region`.
///
/// The thread ends when the driver closes its end. A `peerDied` from the device's notifier — the
/// driver went away while the device was notifying — counts as that ordinary end, not a failure.
func startDeviceThread<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
    region: consuming Region,
    notifier: Notify,
    spins: Int
) -> BackgroundThread {
    let runner: any ThreadBody = DeviceRunner(region: region, notifier: notifier, spins: spins)
    return BackgroundThread(name: "virtqueue-conformance-device", runner)
}

/// Work for a ``BackgroundThread``, as an object, so that the thread's closure captures no
/// generic type.
protocol ThreadBody: Sendable {
    func run() throws
}

/// The device thread's work, boxed so the thread's closure captures no generic type.
final class DeviceRunner<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>: ThreadBody, Sendable {
    let region: Handoff<Region>
    let notifier: Notify
    let spins: Int

    init(region: consuming Region, notifier: Notify, spins: Int) {
        self.region = Handoff(region)
        self.notifier = notifier
        self.spins = spins
    }

    func run() throws {
        var queue = try DeviceQueue(region: region.take("the device's region"), notifier: notifier)
        var device = ConformanceDevice()
        do {
            try queue.serve(&device, spins: spins)
        } catch let error as VirtqueueError where error.code == .peerDied {
            return
        }
    }
}

/// Joins a device thread, failing the check if it hangs or failed.
func joinDevice(
    _ thread: BackgroundThread,
    _ context: CheckContext,
    fileID: String = #fileID,
    line: Int = #line
) throws(CheckFailure) {
    switch thread.join(timeout: context.timeout) {
    case .none:
        throw CheckFailure(
            "the device thread did not return within \(context.timeout) after the driver closed its end: its wait did not end with peerDied",
            fileID: fileID,
            line: line
        )
    case .some(.some(let error)):
        throw CheckFailure("the device thread failed: \(error)", fileID: fileID, line: line)
    case .some(.none):
        return
    }
}

extension QueueEnds where Region: ~Copyable {
    /// What a watchdog does when it fires: close both ends, then kick both notifiers a few
    /// times, so that a blocked wait returns whether it is the backend's close or its kicks
    /// that work.
    func unblocker() -> @Sendable () -> Void {
        let closeDriver = driver.close
        let closeDevice = device.close
        let driverNotifier = driver.notifier
        let deviceNotifier = device.notifier
        return {
            closeDriver()
            closeDevice()
            for _ in 0..<3 {
                try? driverNotifier.notify()
                try? deviceNotifier.notify()
            }
        }
    }
}
