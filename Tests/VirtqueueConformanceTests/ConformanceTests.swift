import Testing
import VirtqueueConformance

/// The whole conformance suite on every backend of this package: one test case per backend
/// and check.
@Suite("Conformance")
struct ConformanceTests {
    @Test(arguments: BackendKind.allCases, ConformanceCheck.allCases)
    func check(_ backend: BackendKind, _ check: ConformanceCheck) throws {
        let summary = try ConformanceSuite().run(check, on: backend.backend)
        print("[\(backend)] \(check): \(summary)")
    }
}
