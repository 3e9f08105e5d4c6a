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

    static let targets = [
        "FuzzDevice", "FuzzDevicePacked", "FuzzDriver", "FuzzDriverPacked", "FuzzHeader", "FuzzVhostUser",
    ]

    /// Saved inputs in `folder/target`, as paths relative to `FuzzTesting/`.
    static func inputs(in folder: String, of target: String) -> [String] {
        let directory = fuzzTesting.appendingPathComponent(folder).appendingPathComponent(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { "\(folder)/\(target)/\($0)" }
    }

    static var failCases: [String] { targets.flatMap { inputs(in: "FailCases", of: $0) } }

    /// Runs one saved input through its target's harness.
    static func replay(_ path: String) throws {
        let bytes = Array(try Data(contentsOf: fuzzTesting.appendingPathComponent(path)))
        try bytes.withUnsafeBytes { raw in
            switch path.split(separator: "/")[1] {
            case "FuzzDevice": try DeviceFuzzer.run(raw)
            case "FuzzDevicePacked": try DeviceFuzzer.run(raw, packed: true)
            case "FuzzDriver": try DriverFuzzer.run(raw)
            case "FuzzDriverPacked": try DriverFuzzer.run(raw, packed: true)
            case "FuzzHeader": try HeaderFuzzer.run(raw)
            case "FuzzVhostUser": try VhostUserFuzzer.run(raw)
            default: Issue.record("\(path) belongs to no fuzz target")
            }
        }
    }

    /// The corpus: the generated seeds plus what libFuzzer found new coverage with, merged in.
    @Test(arguments: targets)
    func corpus(_ target: String) {
        let paths = Self.inputs(in: "Corpus", of: target)
        #expect(!paths.isEmpty, "no corpus for \(target)")
        for path in paths {
            #expect(throws: Never.self, "\(path)") { try Self.replay(path) }
        }
    }

    /// Every input that once made a target fail, one test case each.
    @Test(arguments: failCases)
    func failCase(_ path: String) throws {
        try Self.replay(path)
    }

    /// The committed seeds are exactly what ``FuzzSeeds`` generates, so the generator and the
    /// corpus cannot drift apart.
    @Test
    func generatedSeedsMatchTheCommittedCorpus() throws {
        let generated: [(String, [FuzzSeeds.Seed])] = [
            ("FuzzDevice", FuzzSeeds.device()),
            ("FuzzDevicePacked", FuzzSeeds.devicePacked()),
            ("FuzzDriver", FuzzSeeds.driver()),
            ("FuzzDriverPacked", FuzzSeeds.driverPacked()),
            ("FuzzHeader", FuzzSeeds.header()),
            ("FuzzVhostUser", FuzzSeeds.vhostUser()),
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
