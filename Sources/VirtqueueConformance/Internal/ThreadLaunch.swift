import Dispatch
import Synchronization
import Virtqueue

/// Launches a ``ConformanceDevice`` on a thread of the suite, over a backend's queue ends, and
/// hands `visitor` the driver's end as a ``LaunchedDevice``: what the suite does for a backend
/// that cannot launch devices itself. So the launched-device checks have one code path, and
/// every backend exercises it.
///
/// `kill` stands in for a crash: the device thread is parked where it is, touching nothing, and
/// the device's end is closed, so the driver sees the peer die. `stop` releases it.
struct ThreadLaunch<Visitor: LaunchedDeviceVisitor>: QueueEndsVisitor {
    let layout: RegionLayout
    let context: CheckContext
    let visitor: Visitor
    var spins = 256

    func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
        _ ends: consuming QueueEnds<Region, Notify>
    ) throws -> Visitor.Output {
        try ends.initialize(layout)
        let closeDevice = ends.device.close
        let unblock = ends.unblocker()
        let killSwitch = KillSwitch()
        let thread = startDeviceThread(
            region: ends.device.region,
            notifier: KillableNotifier(base: ends.device.notifier, killSwitch: killSwitch),
            spins: spins
        )
        let timeout = context.timeout
        let stop: @Sendable () throws -> Void = {
            killSwitch.release()
            unblock()  // closes the driver's end: the device's serve loop returns
            switch thread.join(timeout: timeout) {
            case .none:
                throw CheckFailure(
                    "the device thread did not return within \(timeout) after the driver closed its end: its wait did not end with peerDied"
                )
            case .some(.some(let error)) where !killSwitch.isKilled:
                throw CheckFailure("the device thread failed: \(error)")
            case .some:
                return
            }
        }
        let kill: @Sendable () throws -> Void = {
            killSwitch.kill()
            closeDevice()
        }
        defer { try? stop() }
        return try visitor.visit(
            LaunchedDevice(region: ends.driver.region, notifier: ends.driver.notifier, stop: stop, kill: kill)
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
