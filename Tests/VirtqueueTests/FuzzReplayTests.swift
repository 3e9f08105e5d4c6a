import Foundation
import Testing
import _VirtqueueFuzzHarness

/// Replays every saved fuzz input — the seed corpora in `FuzzTesting/Corpus/` and every input
/// that once crashed a target, in `FuzzTesting/FailCases/` — through the same harnesses the
/// libFuzzer targets run, so `swift test` keeps each one passing without a fuzzing toolchain.
@Suite
struct FuzzReplayTests {
    static let fuzzTesting = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()
        .deletingLastPathComponent()
        .deletingLastPathComponent()
        .appendingPathComponent("FuzzTesting")

    /// Saved inputs of one target, as paths relative to `FuzzTesting/`.
    static func inputs(of target: String) -> [String] {
        ["Corpus", "FailCases"].flatMap { folder in
            let directory = fuzzTesting.appendingPathComponent(folder).appendingPathComponent(target)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            return names.filter { !$0.hasPrefix(".") }.sorted().map { "\(folder)/\(target)/\($0)" }
        }
    }

    static func replay(_ path: String, _ run: (UnsafeRawBufferPointer) throws -> Void) throws {
        let bytes = Array(try Data(contentsOf: fuzzTesting.appendingPathComponent(path)))
        try bytes.withUnsafeBytes { try run($0) }
    }

    @Test
    func everyTargetHasSavedInputs() {
        for target in ["FuzzDevice", "FuzzDriver", "FuzzHeader"] {
            #expect(!Self.inputs(of: target).isEmpty, "no saved inputs for \(target)")
        }
    }

    @Test(arguments: inputs(of: "FuzzDevice"))
    func device(_ path: String) throws {
        try Self.replay(path) { try DeviceFuzzer.run($0) }
    }

    @Test(arguments: inputs(of: "FuzzDriver"))
    func driver(_ path: String) throws {
        try Self.replay(path) { try DriverFuzzer.run($0) }
    }

    @Test(arguments: inputs(of: "FuzzHeader"))
    func header(_ path: String) throws {
        try Self.replay(path) { try HeaderFuzzer.run($0) }
    }

    /// The committed seeds are exactly what ``FuzzSeeds`` generates, so the generator and the
    /// corpus cannot drift apart.
    @Test
    func generatedSeedsMatchTheCommittedCorpus() throws {
        let generated: [(String, [FuzzSeeds.Seed])] = [
            ("FuzzDevice", FuzzSeeds.device()),
            ("FuzzDriver", FuzzSeeds.driver()),
            ("FuzzHeader", FuzzSeeds.header()),
        ]
        for (target, seeds) in generated {
            for seed in seeds {
                let path = "Corpus/\(target)/seed-\(seed.name)"
                let committed = try Data(contentsOf: Self.fuzzTesting.appendingPathComponent(path))
                #expect(Array(committed) == seed.bytes, "\(path) differs from FuzzSeeds; run `swift run MakeSeeds`")
            }
        }
    }
}
