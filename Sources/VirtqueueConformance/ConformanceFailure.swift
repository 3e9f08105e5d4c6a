/// A conformance check failed: which check, on which backend, what broke, and where.
///
/// ``location`` is the assertion inside the suite's source that failed
/// (`VirtqueueConformance/Checks/…swift:line`); read it next to ``message`` to see exactly what
/// was being checked.
public struct ConformanceFailure: Error, Hashable, Sendable, CustomStringConvertible {
    /// The check that failed.
    public var check: ConformanceCheck
    /// The ``ConformanceBackend/name`` of the backend under test.
    public var backend: String
    /// What broke, naming the values involved.
    public var message: String
    /// The failing assertion's file in the suite (`#fileID`).
    public var fileID: String
    /// The failing assertion's line.
    public var line: Int

    /// Creates a failure.
    public init(check: ConformanceCheck, backend: String, message: String, fileID: String, line: Int) {
        self.check = check
        self.backend = backend
        self.message = message
        self.fileID = fileID
        self.line = line
    }

    /// `fileID:line` of the failing assertion.
    public var location: String { "\(fileID):\(line)" }

    public var description: String {
        "conformance check '\(check)' failed on backend '\(backend)': \(message) (at \(location))"
    }
}
