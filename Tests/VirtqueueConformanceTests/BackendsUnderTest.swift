import Testing
import Virtqueue
import VirtqueueConformance

/// A backend under test, named for the test report, with the checks it says do not apply to it.
struct BackendUnderTest: Sendable, CustomTestStringConvertible {
    let backend: any ConformanceBackend
    /// Checks this backend reports as not applicable (with a reason); any other must pass.
    let notApplicable: Set<ConformanceCheck>
    /// The ring format the suite runs on it.
    var ringFormat: RingFormat = .split
    var testDescription: String { "\(backend.name), \(ringFormat)" }

    init(_ backend: any ConformanceBackend, notApplicable: Set<ConformanceCheck> = []) {
        self.backend = backend
        self.notApplicable = notApplicable
    }

    /// The same backend, run with `format`.
    func running(_ format: RingFormat) -> BackendUnderTest {
        var copy = self
        copy.ringFormat = format
        return copy
    }
}

/// Both ring formats: the suite runs every check on each.
let ringFormats: [RingFormat] = [.split, .packed]

/// Every backend of this package the conformance suite runs on. Adding a backend is one line here.
let backendsUnderTest: [BackendUnderTest] = [
    BackendUnderTest(HeapConformanceBackend(), notApplicable: [.peerProcessDeath]),
    BackendUnderTest(FileConformanceBackend()),
    BackendUnderTest(MultiMappingConformanceBackend(), notApplicable: [.peerProcessDeath]),
    BackendUnderTest(SharedMemoryConformanceBackend()),
    BackendUnderTest(SandboxConformanceBackend()),
]
