import Testing
import VirtqueueConformance

/// The suite fails loudly, naming the right check, when fed a deliberately broken backend.
@Suite("Conformance: broken backends fail")
struct BrokenBackendTests {
    /// A short timeout: these backends hang where a good one would not, and the suite must turn
    /// the hang into a failure.
    let suite = ConformanceSuite(configuration: .init(timeout: .seconds(2)))

    /// Runs `check`, which must fail, and returns the failure.
    func expectFailure(
        of check: ConformanceCheck,
        on backend: some ConformanceBackend,
        suite: ConformanceSuite? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> ConformanceFailure? {
        do {
            let summary = try (suite ?? self.suite).run(check, on: backend)
            Issue.record(
                "\(check) passed on the broken backend '\(backend.name)': \(summary)",
                sourceLocation: sourceLocation
            )
            return nil
        } catch {
            #expect(error.check == check, sourceLocation: sourceLocation)
            #expect(error.backend == backend.name, sourceLocation: sourceLocation)
            #expect(error.fileID.hasPrefix("VirtqueueConformance/"), "\(error)", sourceLocation: sourceLocation)
            #expect(error.line > 0, sourceLocation: sourceLocation)
            #expect(error.description.contains("'\(check)'"), sourceLocation: sourceLocation)
            print("[\(backend.name)] \(error)")
            return error
        }
    }

    @Test func aNotifierThatDropsKicksFailsTheLostWakeUpCheck() {
        let failure = expectFailure(of: .noLostWakeUp, on: KickDroppingBackend())
        #expect(failure?.message.contains("a wake-up was lost") == true, "\(String(describing: failure))")
    }

    @Test func aNotifierThatDropsKicksFailsTheSeedUseCase() {
        let failure = expectFailure(of: .seedUseCase, on: KickDroppingBackend())
        #expect(failure?.message.contains("no progress for") == true, "\(String(describing: failure))")
    }

    @Test func endsThatAreNotTheSameMemoryFailTheSharedBytesCheck() {
        let failure = expectFailure(of: .regionEndsShareBytes, on: SplitMemoryBackend())
        #expect(failure?.message.contains("not the same memory") == true, "\(String(describing: failure))")
    }

    @Test func endsThatAreNotTheSameMemoryFailTheHostileChecks() {
        // The hostile writer's bytes never reach the queue under test.
        for check in [ConformanceCheck.hostileDevice, .hostileDriver] {
            _ = expectFailure(of: check, on: SplitMemoryBackend())
        }
    }

    @Test func aWaitThatNeverEndsOnPeerCloseFailsTheNotifierCheck() {
        let failure = expectFailure(of: .notifierEndsWaitOnPeerClose, on: DeafToCloseBackend())
        #expect(failure?.message.contains("a dead peer hangs the waiter") == true, "\(String(describing: failure))")
    }

    @Test func aWaitThatNeverEndsOnPeerCloseFailsThePeerDeathCheck() {
        let failure = expectFailure(of: .peerDeathMidFlight, on: DeafToCloseBackend())
        #expect(failure?.message.contains("did not end") == true, "\(String(describing: failure))")
    }

    @Test func aRegionSmallerThanTheLayoutFailsTheSharedBytesCheck() {
        let failure = expectFailure(of: .regionEndsShareBytes, on: ShortRegionBackend())
        #expect(failure?.message.contains("the layout needs") == true, "\(String(describing: failure))")
    }

    @Test func aNotifierThatDropsEveryKickFailsTheDeliveryCheck() {
        let failure = expectFailure(of: .notifierDeliversKicks, on: SilentNotifierBackend())
        #expect(failure?.message.contains("the kick was not delivered") == true, "\(String(describing: failure))")
    }

    @Test func aNotifierThatDropsEveryKickAndSpinsFailsTheDeliveryCheck() {
        let failure = expectFailure(of: .notifierDeliversKicks, on: SpinningSilentNotifierBackend())
        #expect(failure?.message.contains("the wait does not sleep") == true, "\(String(describing: failure))")
    }

    /// The claims table of "Writing a backend" says these checks prove that waits *return*, not
    /// that kicks arrive: a notifier that drops every kick and whose wait returns at once passes
    /// them all. If one of them starts catching it, the table can say more.
    @Test(arguments: [
        ConformanceCheck.seedUseCase, .notificationSuppression, .noLostWakeUp, .notifierWakesAWaiter,
        .notifierKeepsEarlyKicks,
    ])
    func checksThatDoNotProveDeliveryPassASpinningNotifierThatDropsEveryKick(_ check: ConformanceCheck) throws {
        let result = try suite.run(check, on: SpinningSilentNotifierBackend())
        #expect(result.outcome == .passed)
    }

    @Test func aNotifierBlindToProcessDeathFailsThePeerProcessDeathCheck() {
        let failure = expectFailure(of: .peerProcessDeath, on: DeathBlindBackend())
        #expect(
            failure?.message.contains("its notifier never noticed that its peer's process died") == true,
            "\(String(describing: failure))"
        )
        #expect(failure?.message.contains("killed with SIGKILL") == true, "\(String(describing: failure))")
    }

    /// The death-blind notifier hears a peer close and delivers its kicks: only the
    /// cross-process check catches it.
    @Test(arguments: [ConformanceCheck.notifierEndsWaitOnPeerClose, .peerDeathMidFlight, .notifierDeliversKicks])
    func aNotifierBlindToProcessDeathPassesTheInProcessChecks(_ check: ConformanceCheck) throws {
        let result = try suite.run(check, on: DeathBlindBackend())
        #expect(result.outcome == .passed)
    }

    @Test func anEndHandedOverWithOtherMemoryFailsThePeerProcessDeathCheck() {
        let failure = expectFailure(of: .peerProcessDeath, on: ForeignMemoryBackend())
        // The helper, the device, finds no header in the memory it was given and says so.
        #expect(failure?.message.contains("the helper ended on its own") == true, "\(String(describing: failure))")
        #expect(failure?.message.contains("invalidHeader") == true, "\(String(describing: failure))")
    }

    @Test func aMissingHelperExecutableFailsThePeerProcessDeathCheckByName() {
        let missing = ConformanceSuite(
            configuration: .init(timeout: .seconds(2), helperExecutable: "/nonexistent/VirtqueueConformanceHelper")
        )
        let failure = expectFailure(of: .peerProcessDeath, on: FileConformanceBackend(), suite: missing)
        #expect(
            failure?.message.contains("/nonexistent/VirtqueueConformanceHelper is not an executable file") == true,
            "\(String(describing: failure))"
        )
    }

    /// A backend in one process says why the cross-process check cannot apply; the suite reports
    /// that, not a pass.
    @Test func aBackendInOneProcessIsReportedNotApplicableWithItsReason() throws {
        let result = try suite.run(.peerProcessDeath, on: HeapConformanceBackend())
        #expect(result.outcome == .notApplicable)
        #expect(result.summary == HeapConformanceBackend.inOneProcess)
        #expect(result.description.contains("does not apply to backend 'heap'"))
    }

    /// The good backends pass the whole suite through ``ConformanceSuite/runAll(on:)`` too (with a
    /// short stress run: the full one runs per check in ``ConformanceTests``).
    @Test(arguments: backendsUnderTest)
    func runAllPassesOnAGoodBackend(_ backend: BackendUnderTest) throws {
        let results = try ConformanceSuite(configuration: .init(stressChainCount: 10_000)).runAll(on: backend.backend)
        #expect(results.map(\.check) == ConformanceCheck.allCases)
        for result in results {
            #expect(result.outcome == (backend.notApplicable.contains(result.check) ? .notApplicable : .passed))
        }
    }
}
