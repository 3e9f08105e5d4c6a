/// What moves the bytes in a scenario.
enum Transport: String, CaseIterable, Codable, Sendable {
    /// This package's queues on the heap backend, driver and device on one thread.
    case virtqueueHeap = "virtqueue heap"
    /// As `virtqueue heap`, on the packed ring (VIRTIO_F_RING_PACKED).
    case virtqueueHeapPacked = "virtqueue heap packed"
    /// This package's queues on the heap backend, the device on its own thread pinned to the
    /// other CPU (cross-core, in one process).
    case virtqueueThreads = "virtqueue 2 threads"
    /// This package's queues over shared memory, device in a child process.
    case virtqueueSharedMemory = "virtqueue shm"
    /// As `virtqueue shm`, on the packed ring (VIRTIO_F_RING_PACKED).
    case virtqueueSharedMemoryPacked = "virtqueue shm packed"
    /// As `virtqueue shm`, on the split ring with VIRTIO_F_IN_ORDER: the device uses buffers in
    /// order and reports a staged run of completely used ones with one used element.
    case virtqueueSharedMemoryInOrder = "virtqueue shm in-order"
    /// As shared memory, the driver using the async API (`VirtqueueAsync`): it awaits each
    /// completion, and an event loop thread sleeps in epoll for it.
    case virtqueueSharedMemoryAsync = "virtqueue shm async"
    /// As shared memory, the child confined by seccomp.
    case virtqueueSandbox = "virtqueue sandbox"
    /// The plain C single-producer single-consumer ring in shared memory.
    case cRing = "C ring"
    /// A hand-written split virtqueue in C with minimal checks (in-process cycles and streams).
    case cVirtqueue = "C virtqueue"
    /// The hand-written C virtqueue with the Swift core's checks (in-process cycles only; not a
    /// ratio column: the targets give the ratios to it).
    case cVirtqueueFull = "C virtqueue, full checks"
    case pipe = "pipe"
    case socketpair = "socketpair"

    /// The transports every ratio is taken against.
    static let baselines: [Transport] = [.cRing, .cVirtqueue, .pipe, .socketpair]

    var isBaseline: Bool { Self.baselines.contains(self) }
}

/// How a side waits for its peer in a round trip.
enum WaitMode: String, Codable, Sendable {
    /// Poll the peer's index; never sleep.
    case busyPoll = "busy-poll"
    /// Sleep every time; the peer kicks it. Named after the C ring's eventfds; the Swift queues
    /// sleep on their notifier (across processes, its notification sockets).
    case eventfd = "eventfd"
    /// Block in read() (pipes and sockets).
    case blocking = "blocking"
}

/// What a scenario measures.
enum Workload: Hashable, Codable, Sendable, CustomStringConvertible {
    /// One submit → take → touch → complete → reclaim cycle on one thread.
    case cycle(segments: Int, payload: Int)
    /// One process streams messages of `size` bytes to another, publishing every `batch`.
    case throughput(size: Int, batch: Int)
    /// A `size`-byte request and a 16-byte completion back.
    case roundTrip(size: Int, mode: WaitMode)
    /// One device serving `queues` queues, each driven by a thread of its own streaming
    /// messages of `size` bytes, publishing every `batch`: the aggregate rate.
    case queueScaling(queues: Int, size: Int, batch: Int)

    var description: String {
        switch self {
        case .cycle(let segments, let payload):
            "in-process cycle, \(segments) segment\(segments == 1 ? "" : "s") of \(formatBytes(payload))"
        case .throughput(let size, let batch):
            "throughput \(formatBytes(size)), batch \(batch)"
        case .roundTrip(let size, let mode):
            "round trip \(formatBytes(size)), \(mode.rawValue)"
        case .queueScaling(let queues, let size, let batch):
            "throughput \(formatBytes(size)), batch \(batch) per queue, \(queues) queue\(queues == 1 ? "" : "s") (aggregate)"
        }
    }

    /// Whether the ratio compares rates (higher is better) rather than times (lower is better).
    var ratioIsThroughput: Bool {
        switch self {
        case .throughput, .queueScaling: true
        default: false
        }
    }

    /// Payload bytes one operation moves.
    var bytesPerOperation: Int {
        switch self {
        case .cycle(let segments, let payload): (segments == 1 ? 1 : segments - 1) * payload
        case .throughput(let size, _): size
        case .roundTrip(let size, _): size
        case .queueScaling(_, let size, _): size
        }
    }

    /// The workload whose pipe and socketpair results serve as this one's baselines: pipes and
    /// sockets have one waiting mode, blocking, which stands in for both ring modes.
    func baselineWorkload(for transport: Transport) -> Workload {
        if case .roundTrip(let size, _) = self, transport == .pipe || transport == .socketpair {
            return .roundTrip(size: size, mode: .blocking)
        }
        // Several queues' aggregate against one stream of the same messages.
        if case .queueScaling(_, let size, let batch) = self { return .throughput(size: size, batch: batch) }
        return self
    }
}

/// One measured run.
struct Sample: Sendable {
    /// Operations timed (for grouped timing: the groups' operations).
    var operations: Int
    /// Their time (for grouped timing: the median group's time times the number of groups).
    var nanoseconds: Double
    /// Kicks over the whole run, and the operations of the whole run.
    var kicks: Int
    var allOperations: Int

    init(operations: Int, nanoseconds: Double, kicks: Int, allOperations: Int? = nil) {
        self.operations = operations
        self.nanoseconds = nanoseconds
        self.kicks = kicks
        self.allOperations = allOperations ?? operations
    }
}

/// A scenario's outcome: the median of its runs, or why it was not measured.
struct Result: Codable, Sendable {
    var workload: Workload
    var transport: Transport
    var status: String
    var nanosecondsPerOperation: Double?
    var runs: [Double]
    var kicksPerMessage: Double?
    var mallocsPerOperation: Double?
    /// Mallocs during the whole counted run (of the same length as a timed run).
    var mallocCount: Int?
    var mallocNote: String?
    var note: String?

    var messagesPerSecond: Double? { nanosecondsPerOperation.map { 1e9 / $0 } }
    var bytesPerSecond: Double? { messagesPerSecond.map { $0 * Double(workload.bytesPerOperation) } }
}

func formatBytes(_ count: Int) -> String {
    if count >= 1 << 20, count % (1 << 20) == 0 { return "\(count >> 20) MiB" }
    if count >= 1 << 10, count % (1 << 10) == 0 { return "\(count >> 10) KiB" }
    return "\(count) B"
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}
