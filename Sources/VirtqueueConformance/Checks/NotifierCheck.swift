import Foundation
import Synchronization
import Virtqueue

/// The notifier checks: the backend's notifier pair alone, no ring.
enum NotifierCheck {
    static let pingPongRounds = 1_000
    static let kickBurst = 100_000

    static func layout(_ context: CheckContext) throws(CheckFailure) -> RegionLayout {
        try context.makeLayout(queueSize: 1, dataAreaSize: 0, features: .all)
    }

    /// ``ConformanceCheck/notifierWakesAWaiter``.
    static func wakesAWaiter(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try layout(context)
        try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
            try backend.withQueueEnds(layout: layout, PingPong(context: context))
        }
        return "\(pingPongRounds) kicks each way between two threads, each waiting for the other"
    }

    /// ``ConformanceCheck/notifierKeepsEarlyKicks``.
    static func keepsEarlyKicks(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try layout(context)
        for towardsDevice in [true, false] {
            try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
                try backend.withQueueEnds(layout: layout, EarlyKicks(context: context, towardsDevice: towardsDevice))
            }
        }
        return "a kick before the wait, and \(kickBurst) kicks before the wait, each woke it, both ways"
    }

    /// ``ConformanceCheck/notifierEndsWaitOnPeerClose``.
    static func endsWaitOnPeerClose(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try layout(context)
        for closingDriver in [true, false] {
            for waitFirst in [true, false] {
                try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
                    try backend.withQueueEnds(
                        layout: layout,
                        PeerClose(context: context, closingDriver: closingDriver, waitFirst: waitFirst)
                    )
                }
            }
        }
        return "waits blocked before, and started after, the peer closed ended with peerDied, both ways"
    }

    /// Two threads kick each other `pingPongRounds` times. Each side waits until a shared counter
    /// moves, as a queue waits until a ring index moves, so merged and spurious wake-ups are fine
    /// and only a lost one hangs.
    struct PingPong: QueueEndsVisitor {
        let context: CheckContext

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws {
            let driverNotifier = ends.driver.notifier
            let deviceNotifier = ends.device.notifier
            let unblock = ends.unblocker()
            let counters = Counters()
            let rounds = NotifierCheck.pingPongRounds
            let echo = BackgroundThread(name: "virtqueue-conformance-echo") {
                var seen = 0
                while seen < rounds, !counters.abandoned.load(ordering: .acquiring) {
                    while counters.sent.load(ordering: .acquiring) == seen { try deviceNotifier.wait() }
                    seen = counters.sent.load(ordering: .acquiring)
                    counters.echoed.store(seen, ordering: .releasing)
                    try deviceNotifier.notify()
                }
            }
            do {
                try withWatchdog(
                    context,
                    hang: { "kick \($0) of \(rounds) did not wake the thread waiting for it: a wake-up was lost" },
                    onFire: unblock
                ) { watchdog in
                    // Give the echo thread time to block in its first wait, so the first kick
                    // wakes a sleeping waiter (not a timing assertion: either order must work).
                    Thread.sleep(forTimeInterval: 0.02)
                    for round in 1...rounds {
                        watchdog.report(round)
                        counters.sent.store(round, ordering: .releasing)
                        try driverNotifier.notify()
                        while counters.echoed.load(ordering: .acquiring) < round { try driverNotifier.wait() }
                    }
                }
            } catch {
                counters.abandoned.store(true, ordering: .releasing)
                unblock()
                _ = echo.join(timeout: context.timeout)
                throw error
            }
            switch echo.join(timeout: context.timeout) {
            case .none: throw CheckFailure("the echo thread did not finish")
            case .some(.some(let error)): throw CheckFailure("the echo thread failed: \(error)")
            case .some(.none): break
            }
        }

        final class Counters: Sendable {
            let sent = Atomic<Int>(0)
            let echoed = Atomic<Int>(0)
            let abandoned = Atomic<Bool>(false)
        }
    }

    /// A kick before the wait; then a burst of kicks with nobody waiting, which must neither
    /// block nor be lost.
    struct EarlyKicks: QueueEndsVisitor {
        let context: CheckContext
        let towardsDevice: Bool

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws {
            let sender = towardsDevice ? ends.driver.notifier : ends.device.notifier
            let waiter = towardsDevice ? ends.device.notifier : ends.driver.notifier
            let direction = towardsDevice ? "driver → device" : "device → driver"
            let unblock = ends.unblocker()
            let burst = NotifierCheck.kickBurst
            let stages = [
                "a kick sent before the wait did not wake it (the kick was lost)",
                "\(burst) kicks with nobody waiting blocked the sender",
                "\(burst) kicks sent before the wait did not wake it (they were lost)",
            ]
            try withWatchdog(
                context,
                hang: { "\(direction): \(stages[min($0, stages.count - 1)])" },
                onFire: unblock
            ) { watchdog in
                try sender.notify()
                try waiter.wait()
                watchdog.report(1)
                for _ in 0..<burst { try sender.notify() }
                watchdog.report(2)
                try waiter.wait()
            }
        }
    }

    /// One end closes; the other end's wait — already blocked, or started afterwards — must end
    /// with `peerDied`.
    struct PeerClose: QueueEndsVisitor {
        let context: CheckContext
        let closingDriver: Bool
        let waitFirst: Bool

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws {
            let closer = closingDriver ? ends.driver.close : ends.device.close
            let closerNotifier = closingDriver ? ends.driver.notifier : ends.device.notifier
            let waiter = closingDriver ? ends.device.notifier : ends.driver.notifier
            let closing = closingDriver ? "the driver" : "the device"
            let waiting = closingDriver ? "the device's" : "the driver's"
            let when = waitFirst ? "blocked before" : "started after"
            if !waitFirst { closer() }
            let abandoned = Atomic<Bool>(false)
            let thread = BackgroundThread(name: "virtqueue-conformance-waiter") {
                // Wake-ups may be spurious: keep waiting until the wait throws.
                while !abandoned.load(ordering: .acquiring) { try waiter.wait() }
            }
            if waitFirst {
                // Let the waiter block first (not a timing assertion: either order must work).
                Thread.sleep(forTimeInterval: 0.02)
                closer()
            }
            switch thread.join(timeout: context.timeout) {
            case .none:
                abandoned.store(true, ordering: .releasing)
                try? closerNotifier.notify()  // release the waiter if kicks still go through
                throw CheckFailure(
                    "\(waiting) wait, \(when) \(closing) closed its end, did not end within \(context.timeout): a dead peer hangs the waiter"
                )
            case .some(.some(let error)):
                guard let error = error as? VirtqueueError, error.code == .peerDied else {
                    throw CheckFailure(
                        "\(waiting) wait, \(when) \(closing) closed its end, ended with \(error), not VirtqueueError.peerDied"
                    )
                }
            case .some(.none):
                throw CheckFailure("the waiter returned without an error")
            }
            closer()
        }
    }
}
