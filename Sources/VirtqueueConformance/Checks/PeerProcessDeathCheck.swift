import Foundation
import Synchronization
import Virtqueue

/// ``ConformanceCheck/peerProcessDeath``: one end of a queue in the suite's helper process,
/// killed with `SIGKILL` mid-stream; the end kept here must learn of it from the kernel alone.
enum PeerProcessDeathCheck {
    /// Chains that must cross before the kill, so that the helper is known to be attached and
    /// traffic is flowing.
    static let chainsBeforeKill = 64
    static let queueSize = 16
    static let bufferSize = 64
    /// The least time the helper gets to start, attach and move the first chains, whatever the
    /// suite's timeout: starting a process is not what the check measures.
    static let startupTimeout: Duration = .seconds(20)
    /// Returns from the survivor's `wait()` allowed after the death, for kicks the helper sent
    /// before it died, before the wait must end with `peerDied`.
    static let waitsAfterDeath = 3

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try context.makeLayout(
            queueSize: queueSize,
            dataAreaSize: 2 * queueSize * bufferSize,
            features: .all
        )
        var ran: [String] = []
        var reasons: [(side: QueueSide, reason: String)] = []
        for kept in QueueSide.allCases {
            let outcome = try attempt("withProcessEnds(layout:keeping: .\(kept), _:), or a queue call inside it,") {
                try backend.withProcessEnds(
                    layout: layout,
                    keeping: kept,
                    Visitor(layout: layout, context: context, kept: kept)
                )
            }
            switch outcome {
            case .visited(let summary): ran.append(summary)
            case .notApplicable(let reason): reasons.append((kept, reason))
            }
        }
        if ran.isEmpty {
            let distinct = Set(reasons.map(\.reason))
            throw NotApplicable(
                reason: distinct.count == 1
                    ? reasons[0].reason
                    : reasons.map { "keeping the \($0.side)'s end: \($0.reason)" }.joined(separator: "; ")
            )
        }
        let skipped = reasons.map { "keeping the \($0.side)'s end does not apply: \($0.reason)" }
        return (ran + skipped).joined(separator: "; ")
    }

    /// Where the survivor is, for the failure message of a survivor that never hears of the death.
    enum Activity: Int {
        case attaching, streaming, notifyAfterDeath, waitAfterDeath

        var account: String {
            switch self {
            case .attaching: "attaching its queue"
            case .streaming: "in its queue's calls (submitting, notifying, waiting)"
            case .notifyAfterDeath: "in notify(), after its queue reported peerDied"
            case .waitAfterDeath: "in wait(), after its queue reported peerDied"
            }
        }
    }

    /// What the survivor thread shares with the check.
    final class Progress: Sendable {
        /// Chains that crossed: replies verified by a surviving driver, requests served by a
        /// surviving device.
        let chains = Atomic<Int>(0)
        let activity = Atomic<Int>(Activity.attaching.rawValue)
        /// What the survivor saw after the death, for the summary.
        let afterDeath = Mutex<String>("")

        func set(_ activity: Activity) { self.activity.store(activity.rawValue, ordering: .releasing) }
        var current: Activity { Activity(rawValue: activity.load(ordering: .acquiring)) ?? .attaching }
    }

    struct Visitor: ProcessEndsVisitor {
        let layout: RegionLayout
        let context: CheckContext
        let kept: QueueSide

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming ProcessEnds<Region, Notify>
        ) throws -> String {
            let role = kept.peer
            try attempt("writing the region header through the \(kept)'s end") {
                try layout.initialize(ends.local.region)
            }
            let executable = try HelperProcess.locate(context.configuration.helperExecutable)
            let helper = try HelperProcess.spawn(
                executable: executable,
                role: role,
                end: ends.remote,
                bufferSize: PeerProcessDeathCheck.bufferSize
            )
            let close = ends.local.close
            let notifier = ends.local.notifier
            let progress = Progress()
            let body: any ThreadBody =
                switch kept {
                case .driver: SurvivingDriver(region: ends.local.region, notifier: notifier, progress: progress)
                case .device: SurvivingDevice(region: ends.local.region, notifier: notifier, progress: progress)
                }
            let survivor = BackgroundThread(name: "virtqueue-conformance-survivor", body)
            let clock = ContinuousClock()
            // Gives up on a survivor stuck for good: hang up its end, kick, and leave it.
            func abandonSurvivor() {
                close()
                try? notifier.notify()
                _ = survivor.join(timeout: .seconds(1))
            }

            // 1. Traffic flows: the helper attached and chains cross.
            let start = clock.now
            while progress.chains.load(ordering: .acquiring) < PeerProcessDeathCheck.chainsBeforeKill {
                if case .some(let outcome) = survivor.join(timeout: .milliseconds(2)) {
                    // A helper that is exiting gets a moment to be seen as ended; one that runs on
                    // (the local end failed on its own) is killed.
                    for _ in 0..<100 where helper.termination(wait: false) == nil {
                        Thread.sleep(forTimeInterval: 0.01)
                    }
                    let helperEnded = helper.termination(wait: false) != nil
                    if !helperEnded {
                        helper.kill()
                        helper.termination(wait: true)
                    }
                    throw CheckFailure(
                        "after \(progress.chains.load(ordering: .acquiring)) chains, before the helper was killed, \(helperEnded ? "the helper ended on its own" : "the \(kept) here stopped") (the \(kept) here \(outcome.map { "failed: \($0)" } ?? "saw its peer die")); \(helper.account())"
                    )
                }
                if helper.termination(wait: false) != nil {
                    abandonSurvivor()
                    throw CheckFailure(
                        "after \(progress.chains.load(ordering: .acquiring)) chains, before the helper was killed, the helper ended on its own; \(helper.account())"
                    )
                }
                let startup = max(context.timeout, PeerProcessDeathCheck.startupTimeout)
                if clock.now - start > startup {
                    helper.kill()
                    abandonSurvivor()
                    throw CheckFailure(
                        "only \(progress.chains.load(ordering: .acquiring)) of \(PeerProcessDeathCheck.chainsBeforeKill) chains crossed between the \(kept) here and the helper within \(startup): is the portable end the same memory and notifier as the local one? \(helper.account())"
                    )
                }
            }

            // 2. SIGKILL, mid-stream.
            let crossed = progress.chains.load(ordering: .acquiring)
            helper.kill()
            let killed = clock.now

            // 3. The survivor must hear of it, from the kernel alone, in bounded time.
            switch survivor.join(timeout: context.timeout) {
            case .none:
                let activity = progress.current
                abandonSurvivor()
                throw CheckFailure(
                    "the helper process (pid \(helper.pid), the \(role)) was killed with SIGKILL after \(crossed) chains; \(context.timeout) later the \(kept) here was still \(activity.account): its notifier never noticed that its peer's process died (nothing closed the peer's end but the kernel; does this process keep a copy of the descriptors it handed over?)"
                )
            case .some(.some(let error as CheckFailure)):
                throw error
            case .some(.some(let error)):
                throw CheckFailure("the \(kept) here failed after the helper was killed: \(error)")
            case .some(.none):
                break
            }
            let noticed = clock.now - killed

            // 4. The helper died of the kill, not of something else first.
            let ended = helper.termination(wait: true)
            guard ended?.wasKilled == true || ended == .unknown else {
                throw CheckFailure("the helper did not die of the kill: \(helper.account())")
            }
            let milliseconds =
                noticed.components.seconds * 1000 + noticed.components.attoseconds / 1_000_000_000_000_000
            return
                "keeping the \(kept)'s end: the helper (the \(role), pid \(helper.pid)) killed with SIGKILL after \(crossed) chains; the \(kept)'s queue ended with peerDied \(milliseconds) ms later, \(progress.afterDeath.withLock { $0 })"
        }
    }

    /// A driver streaming chains to the helper's device until it dies.
    final class SurvivingDriver<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>: ThreadBody, Sendable {
        let region: Handoff<Region>
        let notifier: Notify
        let progress: Progress

        init(region: consuming Region, notifier: Notify, progress: Progress) {
            self.region = Handoff(region)
            self.notifier = notifier
            self.progress = progress
        }

        func run() throws {
            var driver = try attachDriver(
                region.take("the driver's region"),
                notifier: notifier,
                bufferSize: PeerProcessDeathCheck.bufferSize
            )
            var stream = StreamingDriver(queueSize: driver.queueSize)
            progress.set(.streaming)
            do {
                while true {
                    try stream.step(&driver)
                    progress.chains.store(stream.received, ordering: .releasing)
                }
            } catch let error as VirtqueueError where error.code == .peerDied {
                // The death, as expected: what follows checks the queue and the notifier after it.
            } catch let error as VirtqueueError {
                throw CheckFailure(
                    "the driver's queue failed with \(error) after \(stream.received) chains, not with VirtqueueError.peerDied"
                )
            }
            try expect(driver.isBroken, "the driver's queue is not broken after peerDied")
            let inFlight = driver.inFlightCount
            var abandoned = 0
            while let chain = driver.takeAbandoned() {
                try expect(
                    chain.status == .abandoned(.peerDied),
                    "chain \(chain.id) came back \(chain.status) after the helper's death, not abandoned(peerDied)"
                )
                try driver.free(chain)
                abandoned += 1
            }
            try expect(
                driver.inFlightCount == 0 && driver.freeBufferCount == driver.bufferCount,
                "\(driver.inFlightCount) chains in flight and \(driver.freeBufferCount) of \(driver.bufferCount) buffers free after taking back the \(abandoned) abandoned"
            )
            let notifierAccount = try checkNotifierAfterDeath(notifier, progress)
            progress.afterDeath.withLock {
                $0 = "all \(inFlight) chains in flight came back abandoned(peerDied); then \(notifierAccount)"
            }
        }
    }

    /// A device serving the helper's driver until it dies.
    final class SurvivingDevice<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>: ThreadBody, Sendable {
        let region: Handoff<Region>
        let notifier: Notify
        let progress: Progress

        init(region: consuming Region, notifier: Notify, progress: Progress) {
            self.region = Handoff(region)
            self.notifier = notifier
            self.progress = progress
        }

        func run() throws {
            var queue = try attachDevice(region.take("the device's region"), notifier: notifier)
            var device = ConformanceDevice()
            var served = 0
            progress.set(.streaming)
            do {
                while true {
                    try queue.waitForRequests(spins: 64)
                    while let request = try queue.nextRequest() {
                        let written = try device.handle(request, on: queue)
                        try queue.complete(request, written: written)
                        served += 1
                        progress.chains.store(served, ordering: .releasing)
                    }
                    try queue.notifyIfNeeded()
                }
            } catch let error as VirtqueueError where error.code == .peerDied {
                // The death, as expected.
            } catch let error as VirtqueueError {
                throw CheckFailure(
                    "the device's queue failed with \(error) after \(served) requests, not with VirtqueueError.peerDied"
                )
            }
            try expect(queue.isBroken, "the device's queue is not broken after peerDied")
            let notifierAccount = try checkNotifierAfterDeath(notifier, progress)
            progress.afterDeath.withLock { $0 = "after \(served) requests served; then \(notifierAccount)" }
        }
    }

    /// After the queue reported the death: `notify()` must not block and throw nothing but
    /// `peerDied`; `wait()` must end with `peerDied` (after at most a few returns for kicks sent
    /// before the death).
    static func checkNotifierAfterDeath<Notify: Notifier>(
        _ notifier: Notify,
        _ progress: Progress
    ) throws -> String {
        progress.set(.notifyAfterDeath)
        let notified: String
        do {
            try notifier.notify()
            notified = "returned"
        } catch let error where error.code == .peerDied {
            notified = "threw peerDied"
        } catch {
            throw CheckFailure("after the peer's process died, notify() threw \(error), not VirtqueueError.peerDied")
        }
        progress.set(.waitAfterDeath)
        for returns in 0..<waitsAfterDeath {
            do {
                try notifier.wait()
            } catch let error where error.code == .peerDied {
                return "notify() \(notified) and wait() threw peerDied (after \(returns) returns)"
            } catch {
                throw CheckFailure("after the peer's process died, wait() threw \(error), not VirtqueueError.peerDied")
            }
        }
        throw CheckFailure(
            "after the peer's process died, wait() returned \(waitsAfterDeath) times instead of ending with VirtqueueError.peerDied"
        )
    }
}
