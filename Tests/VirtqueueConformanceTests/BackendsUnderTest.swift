import Testing
import VirtqueueConformance

/// A backend under test, named for the test report.
struct BackendUnderTest: Sendable, CustomTestStringConvertible {
    let backend: any ConformanceBackend
    var testDescription: String { backend.name }
}

/// Every backend of this package the conformance suite runs on. Adding a backend is one line here.
let backendsUnderTest: [BackendUnderTest] = [
    HeapConformanceBackend(),
    FileConformanceBackend(),
    MultiMappingConformanceBackend(),
    SharedMemoryConformanceBackend(),
    SandboxConformanceBackend(),
].map(BackendUnderTest.init)
