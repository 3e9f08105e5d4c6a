import BenchmarkScenarios
import CBaselines
import Foundation
import Synchronization
import SystemPackage
import Virtqueue
import VirtqueueSharedMemory

/// Aggregate throughput against the number of queues: one `TouchDevice` in a shared-memory child
/// serving `queues` queues of one region, each on a thread of its own (the multi-queue launcher),
/// each queue driven by a thread of this process streaming 64-byte messages in batches of 32
/// (`DriverWorkloads.stream`, the single-queue throughput loop). Nothing is pinned: the
/// scheduler places the 2 × `queues` busy threads. The rate is every queue's messages over the
/// time from the first driver's start to the last one's end; its ratios are against one stream
/// of the same messages (`throughput 64 B, batch 32`) in the same invocation.
enum QueueScaling {
    static func addScenarios(_ add: (Scenario) -> Void) {
        for queues in [1, 2] {
            add(
                Scenario(
                    workload: .queueScaling(queues: queues, size: 64, batch: 32),
                    transport: .virtqueueSharedMemory
                ) { try throughput(queues: queues, size: 64, batch: 32, count: $0) }
            )
        }
    }

    /// Runs ``measure(queues:size:batch:count:)`` on a thread allowed on every CPU, so that
    /// neither the device process it starts nor the driver threads inherit the main thread's pin.
    static func throughput(queues: Int, size: Int, batch: Int, count: Int) throws -> Sample {
        let outcome = Mutex<Swift.Result<Sample, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            _ = vqb_unpin_thread()
            let result = Swift.Result { try measure(queues: queues, size: size, batch: batch, count: count) }
            outcome.withLock { $0 = result }
            done.signal()
        }
        .start()
        done.wait()
        guard let result = outcome.withLock({ $0 }) else {
            throw BenchmarkFailure(description: "queue scaling: no result")
        }
        return try result.get()
    }

    static func measure(queues: Int, size: Int, batch: Int, count: Int) throws -> Sample {
        let slots = Int(CBaseline.ringSlots(size: size))
        let bufferSize = (size + 15) & ~15
        let layout = try RegionLayout(
            queueSizes: Array(repeating: slots, count: queues),
            dataAreaSize: queues * 2 * slots * bufferSize,
            features: .all
        )
        var options = LaunchOptions()
        options.spins = Int(loadSpins)
        options.queues = Array(0..<queues)
        let device = try SharedMemoryBackend.launch(TouchDevice.self, layout: layout, options: options)
        let perQueue = max(batch, count / queues / batch * batch)
        let ready = Atomic<Int>(0)
        let times = Mutex<[(start: UInt64, end: UInt64, kicks: Int)]>([])
        let errors = Mutex<[any Error]>([])
        let group = DispatchGroup()
        for queue in 0..<queues {
            group.enter()
            Thread {
                defer { group.leave() }
                do {
                    var driver = try device.makeDriverQueue(queue: queue, bufferSize: bufferSize)
                    try ChildProcesses.warmUp(&driver, size: size, slots: slots)
                    // Every queue starts together.
                    ready.add(1, ordering: .acquiringAndReleasing)
                    while ready.load(ordering: .acquiring) < queues {}
                    let groupTimes = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: 1)
                    defer { groupTimes.deallocate() }
                    let start = vqb_now_ns()
                    let (kicks, _) = try DriverWorkloads.stream(
                        &driver,
                        size: size,
                        batch: batch,
                        count: perQueue,
                        spins: Int(loadSpins),
                        groupSize: perQueue,
                        groupTimes: groupTimes
                    )
                    let end = vqb_now_ns()
                    times.withLock { $0.append((start, end, kicks)) }
                } catch {
                    ready.add(queues, ordering: .acquiringAndReleasing)
                    errors.withLock { $0.append(device.explain(error)) }
                }
            }
            .start()
        }
        group.wait()
        device.stop()
        if let error = errors.withLock({ $0.first }) { throw error }
        if let failure = device.failure() { throw failure }
        let runs = times.withLock { $0 }
        guard let first = runs.map(\.start).min(), let last = runs.map(\.end).max(), runs.count == queues else {
            throw BenchmarkFailure(description: "queue scaling: \(runs.count) of \(queues) queues finished")
        }
        return Sample(
            operations: perQueue * queues,
            nanoseconds: Double(last - first),
            kicks: runs.map(\.kicks).reduce(0, +)
        )
    }
}
