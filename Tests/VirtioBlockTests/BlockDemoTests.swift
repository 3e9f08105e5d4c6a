import Foundation
import Testing

/// Runs the README's main job — the BlockDemo executable, built beside this test binary — and
/// checks what it prints at every isolation level, including the --misbehave path.
@Suite("BlockDemo, the sandboxed component demo", .serialized)
struct BlockDemoTests {
    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("BlockDemo")
    }

    /// Runs the demo and returns its exit status and everything it printed.
    func runDemo(_ arguments: [String]) throws -> (status: Int32, output: String) {
        var executable = Self.executable
        if !FileManager.default.fileExists(atPath: executable.path) {
            // Under `swift test`, arguments[0] may be the xctest bundle's folder or the runner.
            executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
                .deletingLastPathComponent().appendingPathComponent("BlockDemo")
        }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func sandboxedDeviceIsKilledReportedRelaunchedAndNothingIsLost() throws {
        let (status, output) = try runDemo(["--megabytes", "4", "--misbehave"])
        #expect(status == 0, "\(output)")
        #expect(output.contains("sandbox: the device in a seccomp-confined child process"))
        #expect(output.contains("attempted the forbidden system call openat"), "\(output)")
        #expect(output.contains("relaunched virtio-blk"))
        #expect(output.contains("device restarts    forbidden system call openat"))
        #expect(output.contains("verification       OK: every sector read back as written"))
    }

    @Test(arguments: ["heap", "shm", "sandbox"])
    func sameWorkloadAtEveryIsolationLevel(isolation: String) throws {
        let (status, output) = try runDemo(["--megabytes", "2", "--isolation", isolation])
        #expect(status == 0, "\(output)")
        #expect(output.contains("moved              4.0 MiB (2.0 MiB written, 2.0 MiB read back)"), "\(output)")
        #expect(output.contains("device restarts    none"))
        #expect(output.contains("verification       OK"))
    }

    /// The same demo on the packed ring: only the feature bit differs, the device and driver code
    /// is the same.
    @Test(arguments: ["heap", "shm", "sandbox"])
    func sameWorkloadOnThePackedRing(isolation: String) throws {
        let (status, output) = try runDemo(["--megabytes", "2", "--isolation", isolation, "--packed"])
        #expect(status == 0, "\(output)")
        #expect(output.contains("ring: packed virtqueue of 256"), "\(output)")
        #expect(output.contains("moved              4.0 MiB (2.0 MiB written, 2.0 MiB read back)"), "\(output)")
        #expect(output.contains("device restarts    none"))
        #expect(output.contains("verification       OK"))
    }

    @Test func aBadFlagIsACleanUsageError() throws {
        let (status, output) = try runDemo(["--isolation", "vm"])
        #expect(status != 0)
        #expect(output.contains("vm"))
    }
}
