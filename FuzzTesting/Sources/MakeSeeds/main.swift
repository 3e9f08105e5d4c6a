// Writes the seed corpora: Corpus/<target>/<name> for each fuzz target.
// Run from FuzzTesting/: `swift run MakeSeeds [directory]` (default Corpus).
import Foundation
import _VirtqueueFuzzHarness

let directory = CommandLine.arguments.dropFirst().first ?? "Corpus"
let targets: [(String, [FuzzSeeds.Seed])] = [
    ("FuzzDevice", FuzzSeeds.device()),
    ("FuzzDevicePacked", FuzzSeeds.devicePacked()),
    ("FuzzDriver", FuzzSeeds.driver()),
    ("FuzzDriverPacked", FuzzSeeds.driverPacked()),
    ("FuzzHeader", FuzzSeeds.header()),
    ("FuzzVhostUser", FuzzSeeds.vhostUser()),
]
for (target, seeds) in targets {
    let folder = URL(fileURLWithPath: directory).appendingPathComponent(target)
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    for seed in seeds {
        try Data(seed.bytes).write(to: folder.appendingPathComponent("seed-\(seed.name)"))
    }
    print("\(target): \(seeds.count) seeds in \(folder.path)")
}
