public import Virtqueue

/// The backend conformance suite: named checks every `MemoryRegion` and
/// `Notifier` pair must pass.
///
/// The suite imports no test framework, so it runs under any harness. With Swift Testing, one
/// parameterised test runs every check:
///
/// ```swift
/// import Testing
/// import VirtqueueConformance
///
/// @Test(arguments: ConformanceCheck.allCases)
/// func conformance(_ check: ConformanceCheck) throws {
///     let result = try ConformanceSuite().run(check, on: MyConformanceBackend())
///     print(result)   // passed, or does not apply, and why
/// }
/// ```
///
/// ``ConformanceCheck/peerProcessDeath`` starts the suite's helper executable,
/// `VirtqueueConformanceHelper`: add that product to the test target's dependencies, so that it is
/// built beside the test binary, where the suite looks for it (or set
/// ``Configuration/helperExecutable``).
public struct ConformanceSuite: Sendable {
    /// Settings for a run.
    public struct Configuration: Hashable, Sendable {
        /// How long a check waits for progress before it declares a hang (a lost wake-up, a wait
        /// that never ends) and fails. The default is 20 seconds; a healthy backend needs far less.
        public var timeout: Duration
        /// How many chains ``ConformanceCheck/concurrentStress`` moves; each carries a device-readable
        /// buffer with a checksummed payload and a device-writable buffer for the reply.
        /// The default is 1,000,000.
        public var stressChainCount: Int
        /// Round trips per feature set in ``ConformanceCheck/noLostWakeUp``. The default is 2,000.
        public var wakeUpRoundTrips: Int
        /// The path of the helper executable ``ConformanceCheck/peerProcessDeath`` starts. `nil`
        /// (the default): the `VIRTQUEUE_CONFORMANCE_HELPER` environment variable if set, else
        /// `VirtqueueConformanceHelper` in the directory of the running executable — where
        /// SwiftPM builds it when the test target depends on the product of that name.
        public var helperExecutable: String?
        /// The ring format every check's queues run: `RingFormat.split` (the default) or
        /// `RingFormat.packed` (the checks' layouts gain VIRTIO_F_RING_PACKED, and the hostile
        /// checks plant the packed rules of ``HostileDeviceRule`` and ``HostileDriverRule``). Run the
        /// suite once per format to cover both.
        public var ringFormat: RingFormat
        /// Whether the checks negotiate VIRTIO_F_IN_ORDER on the rings they make: the device then
        /// uses buffers in the order they were made available (holding early completions, folding
        /// staged runs into one used element), the driver takes batches back and builds one chain
        /// at a time, and ``ConformanceCheck/hostileDevice`` plants the in-order rules
        /// (``HostileInOrderDeviceRule``) as well. Checks of the notifier or the bytes alone do
        /// not change. The default is `false`; run the suite both ways (``ConformanceCheck/usesRings``),
        /// with either ``ringFormat``: on the packed ring a staged run is one used descriptor,
        /// and both sides skip the run's other descriptors.
        public var inOrder: Bool

        /// Creates a configuration; every parameter has its default.
        public init(
            timeout: Duration = .seconds(20),
            stressChainCount: Int = 1_000_000,
            wakeUpRoundTrips: Int = 2_000,
            helperExecutable: String? = nil,
            ringFormat: RingFormat = .split,
            inOrder: Bool = false
        ) {
            self.timeout = timeout
            self.stressChainCount = stressChainCount
            self.wakeUpRoundTrips = wakeUpRoundTrips
            self.helperExecutable = helperExecutable
            self.ringFormat = ringFormat
            self.inOrder = inOrder
        }
    }

    /// The settings of this suite.
    public var configuration: Configuration

    /// Creates a suite.
    ///
    /// - Parameter configuration: Timeouts and sizes; the defaults suit a CI machine.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Runs one check on `backend`.
    ///
    /// - Parameters:
    ///   - check: The check.
    ///   - backend: The backend under test.
    /// - Returns: Whether the check passed or does not apply to `backend`, with a short account of
    ///   what ran (sizes, counts, time) or why it does not apply, for logs.
    /// - Throws: ``ConformanceFailure`` naming the check, the backend, what broke and where.
    @discardableResult
    public func run(_ check: ConformanceCheck, on backend: some ConformanceBackend) throws(ConformanceFailure)
        -> ConformanceResult
    {
        let context = CheckContext(configuration: configuration, backendName: backend.name)
        do {
            let summary = try check.body(backend, context)
            return ConformanceResult(check: check, backend: backend.name, outcome: .passed, summary: summary)
        } catch let notApplicable as NotApplicable {
            return ConformanceResult(
                check: check,
                backend: backend.name,
                outcome: .notApplicable,
                summary: notApplicable.reason
            )
        } catch let failure as CheckFailure {
            throw ConformanceFailure(
                check: check,
                backend: backend.name,
                message: failure.message,
                fileID: failure.fileID,
                line: failure.line
            )
        } catch {
            throw ConformanceFailure(
                check: check,
                backend: backend.name,
                message: "unexpected error: \(error)",
                fileID: #fileID,
                line: #line
            )
        }
    }

    /// Runs every check on `backend`, in `ConformanceCheck.allCases` order, stopping at the
    /// first failure. A check that does not apply does not stop the run.
    ///
    /// - Parameter backend: The backend under test.
    /// - Returns: Each check's result, in the order run.
    /// - Throws: The first ``ConformanceFailure``.
    @discardableResult
    public func runAll(on backend: some ConformanceBackend) throws(ConformanceFailure) -> [ConformanceResult] {
        var results: [ConformanceResult] = []
        for check in ConformanceCheck.allCases {
            results.append(try run(check, on: backend))
        }
        return results
    }
}

extension ConformanceCheck {
    /// The implementation of each check.
    func body(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        switch self {
        case .regionEndsShareBytes: try SharedBytesCheck.run(backend, context)
        case .seedUseCase: try SeedUseCaseCheck.run(backend, context)
        case .ringFullAndEmpty: try RingEdgesCheck.run(backend, context)
        case .poolExhaustion: try PoolExhaustionCheck.run(backend, context)
        case .chainLengths: try ChainLengthsCheck.run(backend, context)
        case .indexWrap: try IndexWrapCheck.run(backend, context)
        case .notificationSuppression: try SuppressionCheck.run(backend, context)
        case .noLostWakeUp: try LostWakeUpCheck.run(backend, context)
        case .notifierWakesAWaiter: try NotifierCheck.wakesAWaiter(backend, context)
        case .notifierKeepsEarlyKicks: try NotifierCheck.keepsEarlyKicks(backend, context)
        case .notifierDeliversKicks: try KickDeliveryCheck.run(backend, context)
        case .notifierEndsWaitOnPeerClose: try NotifierCheck.endsWaitOnPeerClose(backend, context)
        case .concurrentStress: try StressCheck.run(backend, context)
        case .hostileDevice: try HostileDeviceCheck.run(backend, context)
        case .hostileDriver: try HostileDriverCheck.run(backend, context)
        case .peerDeathMidFlight: try PeerDeathCheck.run(backend, context)
        case .peerProcessDeath: try PeerProcessDeathCheck.run(backend, context)
        }
    }
}
