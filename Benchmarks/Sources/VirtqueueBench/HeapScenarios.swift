import BenchmarkScenarios
import CBaselines

/// Holds the heap cycle (a `~Copyable` pair of queues) for the reporter's closures.
final class HeapCycleBox {
    var cycle: HeapCycle

    init() throws {
        cycle = try HeapCycle(payload: 64)
    }

    func runOneSegment(_ count: Int) throws -> Sample {
        let start = vqb_now_ns()
        let checksum = try cycle.runOneSegment(iterations: count)
        let end = vqb_now_ns()
        blackHole(checksum)
        return Sample(operations: count, nanoseconds: Double(end - start), kicks: 0)
    }

    func runThreeSegments(_ count: Int) throws -> Sample {
        let start = vqb_now_ns()
        let checksum = try cycle.runThreeSegments(iterations: count)
        let end = vqb_now_ns()
        blackHole(checksum)
        return Sample(operations: count, nanoseconds: Double(end - start), kicks: 0)
    }
}

@inline(never)
func blackHole<T>(_ value: T) {}
