// virtqueue-bench: every scenario of the suite and every baseline, in one invocation, on one
// machine state; a table with the ratios to each baseline, and JSON.
//
//   virtqueue-bench [--quick] [--runs N] [--seconds S] [--filter TEXT] [--cpus A,B]
//                   [--json PATH] [--svg PATH] [--markdown PATH]
//   virtqueue-bench profile SCENARIO ITERATIONS   (a fixed amount of work, for callgrind; see --help)
//
// Run it through scripts/bench.sh, which builds it in release mode and preloads the malloc
// interposer so mallocs per operation are counted.
import BenchmarkScenarios
import CBaselines
import Foundation
import Virtqueue
import VirtqueueSandbox
import VirtqueueSharedMemory

// The C virtqueue's device, started by `profile cvq-shm` (vqb_virtqueue_stream_spawned): serves
// the stream and exits.
if CommandLine.arguments.dropFirst().first == "c-device" { exit(vqb_virtqueue_device_process()) }

// A child started by the shared-memory or sandboxed backend re-enters here in the device role,
// serves TouchDevice and exits; the benchmark process goes on.
DeviceHost.runIfDeviceRole(devices: [DeviceHost.Entry(TouchDevice.self)], confinement: SandboxConfinement())

var configuration = RunConfiguration()
var filters: [String] = []
var jsonPath: String?
var svgPath: String?
var markdownPath: String?
var arguments = Array(CommandLine.arguments.dropFirst())

func usage() -> Never {
    FileHandle.standardError.write(
        Data(
            """
            usage: virtqueue-bench [--quick] [--runs N] [--seconds S] [--filter TEXT]... [--cpus A,B]
                                   [--json PATH|-] [--svg PATH] [--markdown PATH]
                   virtqueue-bench profile SCENARIO ITERATIONS

            profile runs a fixed amount of work, for callgrind (scripts/instructions.sh):
              one, three      the Swift heap cycle, 1 segment / 2 readable + 1 writable
              one-send        `one` with the driver's one-call send (split ring)
              one-packed, three-packed  the same on the packed ring
              one-in-order, three-in-order   the same with VIRTIO_F_IN_ORDER negotiated
              one-packed-in-order, three-packed-in-order   the same on the packed ring
              c               the C ring's cycle
              cvq, cvq3       the hand-written C virtqueue's cycles, minimal checks
              cvq-full, cvq3-full   the same with the Swift core's checks
              serve, serve-generic  the device's serve loop on one thread, concrete / existential device
              threads         a 64 B batch-32 stream to a device thread
              shm             a 64 B batch-32 stream to a shared-memory child (sleeps, never polls)
              shm-packed      the same on the packed ring
              shm-in-order    the same with VIRTIO_F_IN_ORDER negotiated
              cvq-shm         the same stream to a C virtqueue device in a spawned process
              cvq-shm-full    the same, the C device doing the Swift core's checks
              (shm and cvq-shm start their child through VQB_PROFILE_CHILD when it is set)

            """.utf8
        )
    )
    exit(2)
}

if arguments.first == "profile" {
    // A fixed amount of work for `valgrind --tool=callgrind`: run twice with different counts
    // and divide the difference in instructions by the difference in iterations.
    guard arguments.count == 3, let iterations = Int(arguments[2]) else { usage() }
    switch arguments[1] {
    case "one", "one-packed":
        var heap = try HeapCycle(features: arguments[1] == "one" ? .all : packedFeatures)
        print(try heap.runOneSegment(iterations: iterations))
    case "one-send":
        var heap = try HeapCycle()
        print(try heap.runOneSend(iterations: iterations))
    case "three", "three-packed":
        var heap = try HeapCycle(features: arguments[1] == "three" ? .all : packedFeatures)
        print(try heap.runThreeSegments(iterations: iterations))
    case "one-in-order", "one-packed-in-order":
        let ring = arguments[1] == "one-in-order" ? Features.all : packedFeatures
        var heap = try HeapCycle(features: ring.union(.inOrder))
        print(try heap.runOneSegment(iterations: iterations))
    case "three-in-order", "three-packed-in-order":
        let ring = arguments[1] == "three-in-order" ? Features.all : packedFeatures
        var heap = try HeapCycle(features: ring.union(.inOrder))
        print(try heap.runThreeSegments(iterations: iterations))
    case "c":
        print(try LocalRing(payload: 64).run(iterations).operations)
    case "threads":
        print(try HeapThreads.throughput(size: 64, batch: 32, count: iterations).kicks)
    case "serve", "serve-generic":
        var cycle = try ServeCycle()
        try cycle.run(batches: iterations / 256, generic: arguments[1] == "serve-generic")
    case "shm":
        print(try ChildProcesses.profile(count: iterations))
    case "shm-packed":
        print(try ChildProcesses.profile(count: iterations, features: packedFeatures))
    case "shm-in-order":
        print(try ChildProcesses.profile(count: iterations, features: inOrderFeatures))
    case "cvq":
        print(try LocalVirtqueue(payload: 64).run(iterations).operations)
    case "cvq3":
        print(try LocalVirtqueue(payload: 64).run(iterations, chain: .three(VQB_CHECKS_MINIMAL)).operations)
    case "cvq-full":
        print(try LocalVirtqueue(payload: 64).run(iterations, chain: .one(VQB_CHECKS_FULL)).operations)
    case "cvq3-full":
        print(try LocalVirtqueue(payload: 64).run(iterations, chain: .three(VQB_CHECKS_FULL)).operations)
    case "cvq-shm":
        print(try SpawnedCVirtqueue.profile(count: iterations))
    case "cvq-shm-full":
        print(try SpawnedCVirtqueue.profile(count: iterations, checks: VQB_CHECKS_FULL))
    default:
        usage()
    }
    exit(0)
}

while let argument = arguments.first {
    arguments.removeFirst()
    func value() -> String {
        guard let value = arguments.first else { usage() }
        arguments.removeFirst()
        return value
    }
    switch argument {
    case "--quick":
        configuration.runs = 3
        configuration.targetSeconds = 0.03
    case "--runs":
        guard let runs = Int(value()), runs >= 1 else { usage() }
        configuration.runs = runs
    case "--seconds":
        guard let seconds = Double(value()), seconds > 0 else { usage() }
        configuration.targetSeconds = seconds
    case "--filter": filters.append(value())
    case "--json": jsonPath = value()
    case "--svg": svgPath = value()
    case "--markdown": markdownPath = value()
    case "--cpus":
        let cpus = value().split(separator: ",").compactMap { Int32($0) }
        guard cpus.count == 2 else { usage() }
        CBaseline.cpus = (cpus[0], cpus[1])
    default: usage()
    }
}

// The driver's thread (this one) runs on the first CPU, as the parent process of the
// cross-process baselines does.
_ = vqb_pin_to_cpu(CBaseline.cpus.parent)
_ = loadAverageAtStart

let scenarios = makeScenarios().filter { scenario in
    filters.isEmpty
        || filters.contains {
            "\(scenario.workload) \(scenario.transport.rawValue)".localizedCaseInsensitiveContains($0)
        }
}
var results: [Result] = []
for scenario in scenarios {
    FileHandle.standardError.write(Data("… \(scenario.workload) — \(scenario.transport.rawValue)\n".utf8))
    results.append(measure(scenario, configuration: configuration))
}

let report = makeReport(results, configuration: configuration)
print(
    "virtqueue-bench: \(report.machine.cpu), \(report.machine.cpus) CPUs, Linux \(report.machine.kernel); "
        + "cross-process pinned to CPUs \(CBaseline.cpus.parent) and \(CBaseline.cpus.child); "
        + "median of \(configuration.runs) runs of ~\(configuration.targetSeconds) s; "
        + "load average \(report.machine.loadAverageAtStart) at start, \(report.machine.loadAverageAtEnd) at end"
)
print(renderTable(report))

let encoder = JSONEncoder()
encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
let json = try encoder.encode(report)
if let jsonPath, jsonPath != "-" {
    try json.write(to: URL(fileURLWithPath: jsonPath))
    print("\nJSON written to \(jsonPath)")
} else {
    print("\nJSON:")
    print(String(decoding: json, as: UTF8.self))
}
if let svgPath {
    try renderThroughputPlot(ResultTable(results: results)).write(toFile: svgPath, atomically: true, encoding: .utf8)
    print("SVG written to \(svgPath)")
}
if let markdownPath {
    try renderMarkdown(report).write(toFile: markdownPath, atomically: true, encoding: .utf8)
    print("Markdown written to \(markdownPath)")
}
if results.contains(where: { $0.status == "failed" }) {
    FileHandle.standardError.write(Data("some scenarios failed; see their notes\n".utf8))
    exit(1)
}
