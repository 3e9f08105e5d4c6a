import BenchmarkScenarios
import CBaselines
import Foundation
import SystemPackage
import Virtqueue
import VirtqueueSandbox
import VirtqueueSharedMemory

/// The Swift queues across processes: the driver in this process on the first CPU, the device
/// (``TouchDevice``) in a child started with `posix_spawn` of this executable, over a sealed
/// memfd region and its two notification sockets, pinned from here to the second CPU; sandboxed, the child
/// runs under the default device-loop seccomp policy. The driver loops are the same as for
/// `HeapThreads`.
enum ChildProcesses {
    /// Launches the device, pins it, builds the driver and runs `body` with it.
    static func withDriver<Result>(
        sandboxed: Bool,
        size: Int,
        spins: Int,
        features: Features = .all,
        executable: String? = nil,
        _ body: (inout DriverQueue<SharedMemoryRegion, EventNotifier>, Int) throws -> Result
    ) throws -> Result {
        let slots = Int(CBaseline.ringSlots(size: size))
        let bufferSize = (size + 15) & ~15
        let layout = try RegionLayout(queueSizes: [slots], dataAreaSize: 2 * slots * bufferSize, features: features)
        var options = LaunchOptions()
        options.spins = spins
        options.executable = executable.map { FilePath($0) }
        /// The same steps at both levels: pin, build the driver, warm up, run, stop and check.
        func run<Device: DeviceHandle>(_ device: Device) throws -> Result
        where Device.Region == SharedMemoryRegion, Device.DriverNotifier == EventNotifier {
            guard let processID = device.location.processID else {
                throw BenchmarkFailure(description: "the device is not in a process: \(device.location)")
            }
            try pin(processID)
            var driver = try device.makeDriverQueue(bufferSize: bufferSize)
            try warmUp(&driver, size: size, slots: slots)
            let result = try body(&driver, bufferSize)
            device.stop()
            if let failure = device.failure() { throw failure }
            return result
        }
        if sandboxed {
            return try run(try SandboxBackend.launch(TouchDevice.self, layout: layout, options: options))
        }
        return try run(try SharedMemoryBackend.launch(TouchDevice.self, layout: layout, options: options))
    }

    /// Sends two rings' worth of messages before the clock starts, so both processes have
    /// faulted in the buffers they will use (a fresh memfd is not populated; the C baselines
    /// touch their memory before timing too).
    static func warmUp(
        _ driver: inout DriverQueue<SharedMemoryRegion, EventNotifier>,
        size: Int,
        slots: Int
    ) throws {
        let groupTimes = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: 1)
        defer { groupTimes.deallocate() }
        _ = try DriverWorkloads.stream(
            &driver,
            size: size,
            batch: 1,
            count: 2 * slots,
            spins: Int(loadSpins),
            groupSize: 2 * slots,
            groupTimes: groupTimes
        )
    }

    /// Pins the child to the second CPU (a sandboxed child may not do it itself).
    static func pin(_ processID: Int32) throws {
        let error = vqb_pin_process(processID, CBaseline.cpus.child)
        guard error == 0 else { throw BenchmarkFailure(description: "cannot pin the device process: errno \(error)") }
    }

    static func throughput(
        sandboxed: Bool,
        size: Int,
        batch: Int,
        count: Int,
        features: Features = .all
    ) throws -> Sample {
        try withDriver(sandboxed: sandboxed, size: size, spins: Int(loadSpins), features: features) { driver, _ in
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
            return try groupSample(
                groupTimes,
                groups: groups,
                size: groupSize,
                kicks: kicks,
                allOperations: count,
                label: "virtqueue stream"
            )
        }
    }

    static func roundTrip(
        sandboxed: Bool,
        size: Int,
        count: Int,
        busy: Bool,
        features: Features = .all
    ) throws -> Sample {
        try withDriver(sandboxed: sandboxed, size: size, spins: busy ? 1 << 20 : 0, features: features) { driver, _ in
            let groupTimes = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: count / Int(VQB_GROUP) + 1)
            defer { groupTimes.deallocate() }
            let (kicks, groups) = try DriverWorkloads.roundTrips(
                &driver,
                size: size,
                count: count,
                spins: busy ? Int.max : 0,
                groupTimes: groupTimes
            )
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
    /// A fixed amount of work for callgrind (`profile shm COUNT`): `count` 64-byte messages in
    /// batches of 32 to a shared-memory child that sleeps instead of polling (spins 0), so the
    /// child's instruction count depends little on timing. The child is `VQB_PROFILE_CHILD` when
    /// set (a script that runs this executable under callgrind, see docs/performance.md), else
    /// this executable.
    ///
    /// - Returns: The number of kicks.
    static func profile(count: Int, features: Features = .all) throws -> Int {
        let child = ProcessInfo.processInfo.environment["VQB_PROFILE_CHILD"]
        return try withDriver(sandboxed: false, size: 64, spins: 0, features: features, executable: child) {
            driver,
            _ in
            let groupTimes = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: 1)
            defer { groupTimes.deallocate() }
            return try DriverWorkloads.stream(
                &driver,
                size: 64,
                batch: 32,
                count: count,
                spins: Int(loadSpins),
                groupSize: count,
                groupTimes: groupTimes
            ).kicks
        }
    }
}
