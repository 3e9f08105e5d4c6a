import BenchmarkScenarios
import CBaselines
import Virtqueue
import VirtqueueHeap

/// Holds the heap cycle (a `~Copyable` pair of queues) for the reporter's closures.
final class HeapCycleBox {
    var cycle: HeapCycle

    init(features: Features = .all) throws {
        cycle = try HeapCycle(payload: 64, features: features)
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

/// A sample from group times: the median group, per operation.
func groupSample(
    _ times: UnsafeMutableBufferPointer<UInt64>,
    groups: Int,
    size: Int,
    kicks: Int,
    allOperations: Int,
    label: String
) throws -> Sample {
    guard groups > 0, let base = times.baseAddress else {
        throw BenchmarkFailure(description: "\(label): too few operations to time a group of \(size)")
    }
    let median = vqb_median(base, groups)
    // Scaled to all the groups' operations, so ns/op is the median group's time per operation.
    return Sample(
        operations: groups * size,
        nanoseconds: Double(median) * Double(groups),
        kicks: kicks,
        allOperations: allOperations
    )
}

@inline(never)
func blackHole<T>(_ value: T) {}

/// The Swift queues across two threads of this process: the driver on this thread, the heap
/// backend's device thread pinned to the other CPU. The same driver loops (DriverWorkloads)
/// and device (TouchDevice) will run across processes on the shared-memory backend.
enum HeapThreads {
    static func launch(size: Int, spins: Int) throws -> (DeviceThread, RegionLayout, Int) {
        let slots = Int(CBaseline.ringSlots(size: size))
        let bufferSize = (size + 15) & ~15
        // Room for every descriptor's buffer plus a reply buffer each (round trips use two).
        let layout = try RegionLayout(queueSizes: [slots], dataAreaSize: 2 * slots * bufferSize, features: .all)
        let device = try HeapBackend.launch(
            TouchDevice.self,
            layout: layout,
            spins: spins,
            configuration: DeviceConfiguration(arguments: ["cpu=\(CBaseline.cpus.child)"])
        )
        return (device, layout, bufferSize)
    }

    static func throughput(size: Int, batch: Int, count: Int) throws -> Sample {
        let (device, _, bufferSize) = try launch(size: size, spins: Int(loadSpins))
        var driver = try device.makeDriverQueue(bufferSize: bufferSize)
        // Groups as the C baselines time them: about a 32nd of the run, whole batches.
        let groupSize = max(batch, count / 32 / batch * batch)
        let groupTimes = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: count / groupSize + 1)
        defer { groupTimes.deallocate() }
        let (kicks, groups) = try DriverWorkloads.stream(
            &driver,
            size: size,
            batch: batch,
            count: count,
            spins: Int(loadSpins),
            groupSize: groupSize,
            groupTimes: groupTimes
        )
        device.stop()
        if let failure = device.failure() { throw failure }
        return try groupSample(
            groupTimes,
            groups: groups,
            size: groupSize,
            kicks: kicks,
            allOperations: count,
            label: "virtqueue stream"
        )
    }

    static func roundTrip(size: Int, count: Int, busy: Bool) throws -> Sample {
        // Busy-poll: both sides poll (the device for about a millisecond between requests before
        // it sleeps, so it still notices the end); eventfd mode: both sleep at once.
        let (device, _, bufferSize) = try launch(size: size, spins: busy ? 1 << 20 : 0)
        var driver = try device.makeDriverQueue(bufferSize: bufferSize)
        let groupTimes = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: count / Int(VQB_GROUP) + 1)
        defer { groupTimes.deallocate() }
        let (kicks, groups) = try DriverWorkloads.roundTrips(
            &driver,
            size: size,
            count: count,
            spins: busy ? Int.max : 0,
            groupTimes: groupTimes
        )
        device.stop()
        if let failure = device.failure() { throw failure }
        return try groupSample(
            groupTimes,
            groups: groups,
            size: Int(VQB_GROUP),
            kicks: kicks,
            allOperations: count,
            label: "virtqueue round trip"
        )
    }
}
