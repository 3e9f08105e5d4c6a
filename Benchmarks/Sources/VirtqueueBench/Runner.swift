import CBaselines
import MallocInterposerSwift

/// How long and how often each scenario runs.
struct RunConfiguration {
    /// Runs per scenario; the report gives their median.
    var runs = 9
    /// The wall-clock time one run aims for.
    var targetSeconds = 0.1
}

/// Counts the allocations of a closure, when the malloc interposer is preloaded.
enum MallocCounter {
    /// Whether the interposer is live in this process (preloaded; see scripts/bench.sh).
    static let isActive: Bool = {
        MallocInterposerSwift.initialize()
        MallocInterposerSwift.reset()
        MallocInterposerSwift.hook()
        let probe = Array(repeating: UInt8(7), count: 1000)
        MallocInterposerSwift.unhook()
        blackHole(probe)
        return MallocInterposerSwift.getStatistics().mallocCount > 0
    }()

    /// Runs `body` and returns the number of mallocs it made in this process, or `nil` if the
    /// interposer is not preloaded.
    static func count(_ body: () throws -> Void) rethrows -> Int? {
        guard isActive else {
            try body()
            return nil
        }
        MallocInterposerSwift.reset()
        MallocInterposerSwift.hook()
        defer { MallocInterposerSwift.unhook() }
        try body()
        return MallocInterposerSwift.getStatistics().mallocCount
    }
}

/// Runs one scenario: calibrates the operation count to the target time, runs it `runs` times,
/// then once more under the malloc counter.
func measure(_ scenario: Scenario, configuration: RunConfiguration) -> Result {
    var result = Result(workload: scenario.workload, transport: scenario.transport, status: "measured", runs: [])
    guard let run = scenario.run else {
        result.status = "pending"
        result.note = scenario.pending
        return result
    }
    do {
        // Calibrate (this also warms up): grow the count until a run takes a tenth of the target.
        var count = max(64, scenario.minimumCount)
        var sample = try run(count)
        while sample.nanoseconds < configuration.targetSeconds * 1e8, count < 1 << 30 {
            count *= 4
            sample = try run(count)
        }
        let perOperation = sample.nanoseconds / Double(max(sample.operations, 1))
        count = max(scenario.minimumCount, Int(configuration.targetSeconds * 1e9 / perOperation))
        var kicks = 0
        var operations = 0
        for _ in 0..<configuration.runs {
            let sample = try run(count)
            result.runs.append(sample.nanoseconds / Double(sample.operations))
            kicks += sample.kicks
            operations += sample.allOperations
        }
        result.nanosecondsPerOperation = median(result.runs)
        result.kicksPerMessage = Double(kicks) / Double(operations)
        var mallocOperations = 0
        if let mallocs = try MallocCounter.count({ mallocOperations = try run(count).operations }) {
            result.mallocsPerOperation = Double(mallocs) / Double(max(mallocOperations, 1))
            result.mallocCount = mallocs
            if !scenario.inProcess { result.mallocNote = "parent process only" }
        } else {
            result.mallocNote = "not counted: preload libMallocInterposerSwift.so (scripts/bench.sh does)"
        }
    } catch {
        result.status = "failed"
        result.note = "\(error)"
    }
    return result
}
