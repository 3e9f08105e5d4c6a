import BenchmarkScenarios
import CBaselines
import Dispatch
import Synchronization
import Virtqueue
import VirtqueueAsync
import VirtqueueSharedMemory

/// The async driver (`VirtqueueAsync.AsyncDriverQueue`) against the same shared-memory child and
/// the same workloads as the blocking driver's `virtqueue shm` rows: the difference between the two
/// rows is what waiting in the event loop instead of in the notifier costs (or saves).
enum AsyncChildProcesses {
    typealias Driver = AsyncDriverQueue<SharedMemoryRegion, EventNotifier>

    /// Launches TouchDevice in a child (spinning `spins` before it sleeps), pins it, warms the
    /// ring up with the blocking driver, wraps the driver and runs `workload` on a task while this
    /// thread waits.
    static func withAsyncDriver<Result: Sendable>(
        size: Int,
        spins: Int,
        _ workload: @escaping @Sendable (UnsafeMutablePointer<Driver>) async throws -> Result
    ) throws -> Result {
        let slots = Int(CBaseline.ringSlots(size: size))
        let bufferSize = (size + 15) & ~15
        let layout = try RegionLayout(queueSizes: [slots], dataAreaSize: 2 * slots * bufferSize, features: .all)
        var options = LaunchOptions()
        options.spins = spins
        let device = try SharedMemoryBackend.launch(TouchDevice.self, layout: layout, options: options)
        try ChildProcesses.pin(device.processID)
        var blocking = try device.makeDriverQueue(bufferSize: bufferSize)
        try ChildProcesses.warmUp(&blocking, size: size, slots: slots)
        var driver = try AsyncDriverQueue(blocking)
        let result = try withUnsafeMutablePointer(to: &driver) { pointer in
            let driver = Transfer(pointer)
            return try blockOn { try await workload(driver.value) }
        }
        device.stop()
        if let failure = device.failure() { throw failure }
        return result
    }

    static func throughput(size: Int, batch: Int, count: Int) throws -> Sample {
        try withAsyncDriver(size: size, spins: Int(loadSpins)) { driver in
            let groupSize = max(batch, count / 32 / batch * batch)
            let groupTimes = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: count / groupSize + 1)
            defer { groupTimes.deallocate() }
            let (kicks, groups) = try await AsyncWorkloads.stream(
                &driver.pointee,
                size: size,
                batch: batch,
                count: count,
                groupSize: groupSize,
                groupTimes: groupTimes
            )
            return try groupSample(
                groupTimes,
                groups: groups,
                size: groupSize,
                kicks: kicks,
                allOperations: count,
                label: "async virtqueue stream"
            )
        }
    }

    static func roundTrip(size: Int, count: Int) throws -> Sample {
        try withAsyncDriver(size: size, spins: 0) { driver in
            let groupTimes = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: count / Int(VQB_GROUP) + 1)
            defer { groupTimes.deallocate() }
            let (kicks, groups) = try await AsyncWorkloads.roundTrips(
                &driver.pointee,
                size: size,
                count: count,
                groupTimes: groupTimes
            )
            return try groupSample(
                groupTimes,
                groups: groups,
                size: Int(VQB_GROUP),
                kicks: kicks,
                allOperations: count,
                label: "async virtqueue round trip"
            )
        }
    }
}

/// The driver loops of `DriverWorkloads`, written with the async API.
enum AsyncWorkloads {
    /// As `DriverWorkloads.stream`: `batch` chains per `notifyIfNeeded()`, room for a batch made
    /// by awaiting the oldest submissions (the ones after it are then usually back already).
    static func stream<Region: GuestMemory & ~Copyable, Notify: ReadinessNotifier>(
        _ driver: inout AsyncDriverQueue<Region, Notify>,
        size: Int,
        batch: Int,
        count: Int,
        groupSize: Int,
        groupTimes: UnsafeMutableBufferPointer<UInt64>
    ) async throws -> (kicks: Int, groups: Int) {
        // Submissions not yet redeemed: a chain taken back frees its descriptor but keeps its
        // buffer until redeemed and freed, so there can be as many as there are buffers.
        let capacity = driver.queue.bufferCount
        let pending = UnsafeMutableBufferPointer<Submission>.allocate(capacity: capacity)
        defer { pending.deallocate() }
        var oldest = 0
        var newest = 0
        var kicks = 0
        var groups = 0
        var groupStart = vqb_now_ns()
        var sequence: UInt64 = 0
        while Int(sequence) < count {
            let chains = min(batch, count - Int(sequence))
            while driver.queue.freeDescriptorCount < chains || driver.queue.freeBufferCount < chains {
                let used = try await driver.completion(of: pending[oldest % capacity])
                oldest += 1
                try driver.free(used)
            }
            for _ in 0..<chains {
                let current = sequence
                var chain = driver.makeChain()
                try driver.appendReadable(to: &chain, count: size) { bytes in Message.write(current, into: bytes) }
                pending.initializeElement(at: newest % capacity, to: try driver.submit(chain))
                newest += 1
                sequence &+= 1
            }
            if try driver.notifyIfNeeded() { kicks += 1 }
            if Int(sequence) % groupSize == 0, groups < groupTimes.count {
                let now = vqb_now_ns()
                groupTimes[groups] = now - groupStart
                groups += 1
                groupStart = now
            }
        }
        while oldest < newest {
            let used = try await driver.completion(of: pending[oldest % capacity])
            oldest += 1
            try driver.free(used)
        }
        return (kicks, groups)
    }

    /// As `DriverWorkloads.roundTrips`: a `size`-byte request and a 16-byte reply, checked.
    static func roundTrips<Region: GuestMemory & ~Copyable, Notify: ReadinessNotifier>(
        _ driver: inout AsyncDriverQueue<Region, Notify>,
        size: Int,
        count: Int,
        groupTimes: UnsafeMutableBufferPointer<UInt64>
    ) async throws -> (kicks: Int, groups: Int) {
        var kicks = 0
        var groups = 0
        var groupStart = vqb_now_ns()
        for index in 0..<count {
            let sequence = UInt64(index)
            var chain = driver.makeChain()
            try driver.appendReadable(to: &chain, count: size) { bytes in
                Message.write(sequence, into: bytes, fillAll: false)
            }
            try driver.appendWritable(to: &chain, capacity: 16)
            let submission = try driver.submit(chain)
            if try driver.notifyIfNeeded() { kicks += 1 }
            let used = try await driver.completion(of: submission)
            var reply: UInt64 = .max
            try driver.queue.forEachSegment(of: used) { isWritable, bytes in
                if isWritable, bytes.count >= 8 { reply = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self)) }
            }
            try driver.free(used)
            guard reply == sequence else {
                throw BenchmarkFailure(description: "async round trip: reply \(reply) to request \(sequence)")
            }
            if (index + 1) % Int(VQB_GROUP) == 0, groups < groupTimes.count {
                let now = vqb_now_ns()
                groupTimes[groups] = now - groupStart
                groups += 1
                groupStart = now
            }
        }
        return (kicks, groups)
    }
}

/// Runs `operation` on a task and blocks this thread — the benchmark's main thread, not one of
/// the cooperative pool's — until it ends.
func blockOn<Result: Sendable>(_ operation: @escaping @Sendable () async throws -> Result) throws -> Result {
    let finished = DispatchSemaphore(value: 0)
    let outcome = Mutex<Swift.Result<Result, any Error>?>(nil)
    Task.detached {
        do {
            let value = try await operation()
            outcome.withLock { $0 = .success(value) }
        } catch {
            outcome.withLock { $0 = .failure(error) }
        }
        finished.signal()
    }
    finished.wait()
    guard let result = outcome.withLock({ $0 }) else {
        throw BenchmarkFailure(description: "the async workload ended without a result")
    }
    return try result.get()
}

/// A value handed to a task while its owner waits for that task: only one touches it at a time.
struct Transfer<Value>: @unchecked Sendable {
    let value: Value

    init(_ value: Value) {
        self.value = value
    }
}
