import Dispatch
import Foundation
import Synchronization
import Virtqueue

/// ``ConformanceCheck/notifierDeliversKicks``: a wait with nothing sent sleeps, and one kick
/// wakes it — so a wait that returns was woken by the kick, not by a notifier that returns at
/// once whatever happens (which every other notifier check would pass, since each tolerates
/// spurious wake-ups).
enum KickDeliveryCheck {
    /// Kicks per direction, each after a quiet spell.
    static let rounds = 3
    /// How long nobody kicks before each kick.
    static let quietSpell: Duration = .milliseconds(100)
    /// Returns from `wait()` allowed in all the quiet spells of one direction together.
    static let spuriousAllowance = 2

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try context.makeLayout(queueSize: 1, dataAreaSize: 0, features: .all)
        var spurious: [Int] = []
        for towardsDevice in [true, false] {
            spurious.append(
                try attempt("withQueueEnds(layout:_:), or a notifier call inside it,") {
                    try backend.withQueueEnds(layout: layout, Visitor(context: context, towardsDevice: towardsDevice))
                }
            )
        }
        return
            "both ways, \(rounds) quiet spells of \(quietSpell) each with the waiter asleep (\(spurious) spurious returns), each ended by one kick that woke it"
    }

    struct Visitor: QueueEndsVisitor {
        let context: CheckContext
        let towardsDevice: Bool

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws -> Int {
            let sender = towardsDevice ? ends.driver.notifier : ends.device.notifier
            let waiter = towardsDevice ? ends.device.notifier : ends.driver.notifier
            let direction = towardsDevice ? "driver → device" : "device → driver"
            let unblock = ends.unblocker()
            let state = State()
            let rounds = KickDeliveryCheck.rounds
            // The waiter counts every return of its wait and acknowledges the kick it was waiting
            // for once that kick has been sent; it stops after the last one.
            let thread = BackgroundThread(name: "virtqueue-conformance-sleeper") {
                while state.acknowledged.load(ordering: .acquiring) < rounds,
                    !state.abandoned.load(ordering: .acquiring)
                {
                    try waiter.wait()
                    state.returns.add(1, ordering: .acquiringAndReleasing)
                    let sent = state.sent.load(ordering: .acquiring)
                    if sent > state.acknowledged.load(ordering: .acquiring) {
                        state.acknowledged.store(sent, ordering: .releasing)
                        state.woke.signal()
                    }
                }
            }
            func abandon() {
                state.abandoned.store(true, ordering: .releasing)
                unblock()
                _ = thread.join(timeout: context.timeout)
            }
            var spurious = 0
            for round in 1...rounds {
                let before = state.returns.load(ordering: .acquiring)
                Thread.sleep(forTimeInterval: KickDeliveryCheck.quietSpell.seconds)
                let during = state.returns.load(ordering: .acquiring) - before
                spurious += during
                if spurious > KickDeliveryCheck.spuriousAllowance {
                    abandon()
                    throw CheckFailure(
                        "\(direction): with no kick sent, the waiter's wait() returned \(during) times in \(KickDeliveryCheck.quietSpell) (quiet spell \(round) of \(rounds); \(spurious) in all, at most \(KickDeliveryCheck.spuriousAllowance) allowed): the wait does not sleep, so a kick it delivers cannot be told from one it drops"
                    )
                }
                state.sent.store(round, ordering: .releasing)
                do {
                    try sender.notify()
                } catch {
                    abandon()
                    throw CheckFailure("\(direction): kick \(round) of \(rounds) failed: \(error)")
                }
                if state.woke.wait(timeout: .now() + context.timeout.dispatchInterval) == .timedOut {
                    abandon()
                    throw CheckFailure(
                        "\(direction): kick \(round) of \(rounds), sent to a waiter asleep for \(KickDeliveryCheck.quietSpell), did not wake it within \(context.timeout): the kick was not delivered"
                    )
                }
            }
            switch thread.join(timeout: context.timeout) {
            case .none:
                abandon()
                throw CheckFailure("\(direction): the waiting thread did not finish after its last kick")
            case .some(.some(let error)):
                throw CheckFailure("\(direction): the waiter's wait() failed: \(error)")
            case .some(.none):
                return spurious
            }
        }
    }

    final class State: Sendable {
        /// Kicks sent so far (the round number of the last).
        let sent = Atomic<Int>(0)
        /// The last kick the waiter saw the wait return for.
        let acknowledged = Atomic<Int>(0)
        /// Every return of the waiter's wait.
        let returns = Atomic<Int>(0)
        let abandoned = Atomic<Bool>(false)
        let woke = DispatchSemaphore(value: 0)
    }
}

extension Duration {
    /// The duration in seconds, for `Thread.sleep(forTimeInterval:)`.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
