import Testing
import VirtqueueConformance

/// The whole conformance suite on every backend of this package: one test case per backend
/// and check.
@Suite("Conformance")
struct ConformanceTests {
    @Test(arguments: backendsUnderTest, ConformanceCheck.allCases)
    func check(_ backend: BackendUnderTest, _ check: ConformanceCheck) throws {
        let summary = try ConformanceSuite().run(check, on: backend.backend)
        print("[\(backend.testDescription)] \(check): \(summary)")
    }
}
