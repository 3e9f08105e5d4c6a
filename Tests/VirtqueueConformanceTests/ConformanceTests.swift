import Testing
import VirtqueueConformance

/// The whole conformance suite on every backend of this package, on both ring formats: one test
/// case per backend, format and check. A check passes, or — only where the backend is listed as saying so — does not
/// apply, with the backend's reason in the report.
@Suite("Conformance")
struct ConformanceTests {
    @Test(
        arguments: backendsUnderTest.flatMap { backend in ringFormats.map { backend.running($0) } },
        ConformanceCheck.allCases
    )
    func check(_ backend: BackendUnderTest, _ check: ConformanceCheck) throws {
        let suite = ConformanceSuite(configuration: .init(ringFormat: backend.ringFormat))
        let result = try suite.run(check, on: backend.backend)
        print("[\(backend.testDescription)] \(result)")
        let expected: ConformanceResult.Outcome = backend.notApplicable.contains(check) ? .notApplicable : .passed
        #expect(result.outcome == expected, "\(result)")
        #expect(!result.summary.isEmpty)
    }

    /// Every check that runs queues again, with VIRTIO_F_IN_ORDER negotiated, on both ring formats.
    @Test(
        arguments: backendsUnderTest.flatMap { backend in ringFormats.map { backend.running($0) } },
        ConformanceCheck.allCases.filter(\.usesRings)
    )
    func checkInOrder(_ backend: BackendUnderTest, _ check: ConformanceCheck) throws {
        let suite = ConformanceSuite(configuration: .init(ringFormat: backend.ringFormat, inOrder: true))
        let result = try suite.run(check, on: backend.backend)
        print("[\(backend.testDescription), IN_ORDER] \(result)")
        let expected: ConformanceResult.Outcome = backend.notApplicable.contains(check) ? .notApplicable : .passed
        #expect(result.outcome == expected, "\(result)")
        #expect(!result.summary.isEmpty)
    }
}
