/// What one check did on one backend: passed, or did not apply — and what ran, or why not.
///
/// A check that fails throws a ``ConformanceFailure`` instead. A check does not apply only when
/// the backend says so, with a reason (``ConformanceBackend/withProcessEnds(layout:keeping:_:)``
/// returning ``ProcessEndsOutcome/notApplicable(reason:)``); a test that requires it to apply
/// checks ``outcome``.
public struct ConformanceResult: Hashable, Sendable, CustomStringConvertible {
    /// Whether the check ran.
    public enum Outcome: String, Hashable, Sendable {
        /// The check ran and the backend passed it.
        case passed
        /// The backend says the check cannot apply to it; ``ConformanceResult/summary`` says why.
        case notApplicable
    }

    /// The check.
    public var check: ConformanceCheck
    /// The ``ConformanceBackend/name`` of the backend.
    public var backend: String
    /// Whether the check ran.
    public var outcome: Outcome
    /// What ran (sizes, counts, time), or why the check does not apply.
    public var summary: String

    /// Creates a result.
    public init(check: ConformanceCheck, backend: String, outcome: Outcome, summary: String) {
        self.check = check
        self.backend = backend
        self.outcome = outcome
        self.summary = summary
    }

    public var description: String {
        switch outcome {
        case .passed: "conformance check '\(check)' passed on backend '\(backend)': \(summary)"
        case .notApplicable: "conformance check '\(check)' does not apply to backend '\(backend)': \(summary)"
        }
    }
}
