// package-benchmark suite for the in-process cycle: the heap backend's driver and device on one
// thread, and the plain C ring's equivalent cycle. `swift package --package-path Benchmarks
// benchmark` runs it with p0…p100 statistics, mallocs and throughput; `scripts/bench.sh` runs the
// whole suite side by side with the cross-process baselines and prints the ratios.
//
// The cross-thread and cross-process scenarios (the Swift queues on two threads, over shared
// memory and in the sandbox, against the C ring, a pipe and a socketpair) run in virtqueue-bench
// (Sources/VirtqueueBench), because each of their runs starts a device thread or process; a
// package-benchmark target for them would go beside this one.
import Benchmark
import BenchmarkScenarios
import CBaselines

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .instructions],
        scalingFactor: .mega,
        maxDuration: .seconds(2),
        maxIterations: 50
    )

    Benchmark("VirtqueueHeapCycle1Segment64B") { benchmark in
        var cycle = try HeapCycle(payload: 64)
        _ = try cycle.runOneSegment(iterations: 1000)
        benchmark.startMeasurement()
        blackHole(try cycle.runOneSegment(iterations: benchmark.scaledIterations.count))
        benchmark.stopMeasurement()
    }

    Benchmark("VirtqueueHeapCycle3Segments64B") { benchmark in
        var cycle = try HeapCycle(payload: 64)
        _ = try cycle.runThreeSegments(iterations: 1000)
        benchmark.startMeasurement()
        blackHole(try cycle.runThreeSegments(iterations: benchmark.scaledIterations.count))
        benchmark.stopMeasurement()
    }

    Benchmark("CRingCycle64B") { benchmark in
        guard let ring = vqb_local_ring_create(256, 64) else { return }
        defer { vqb_local_ring_destroy(ring) }
        _ = vqb_local_ring_cycle(ring, 1000, 64)
        benchmark.startMeasurement()
        blackHole(vqb_local_ring_cycle(ring, UInt64(benchmark.scaledIterations.count), 64))
        benchmark.stopMeasurement()
    }
}
