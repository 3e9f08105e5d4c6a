import CBaselines
import Virtqueue

/// One row of the report: a workload on a transport, and how to run it (or why it cannot run yet).
struct Scenario {
    var workload: Workload
    var transport: Transport
    /// Runs `count` operations; `nil` while the transport is pending.
    var run: ((Int) throws -> Sample)?
    /// Why the scenario is not measured yet.
    var pending: String?
    /// Whether mallocs are counted in the process doing all the work (in-process scenarios);
    /// otherwise only the parent's side is counted.
    var inProcess = false
    /// The fewest operations a run may have (round trips: three groups of `VQB_GROUP`).
    var minimumCount = 32
}

/// Payload sizes of the sweeps: 64 B to 1 MiB.
let sweepSizes = [64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576]

/// The features of the packed-ring scenarios: the split ones' (`Features.all`) and RING_PACKED.
let packedFeatures = Features.all.union(.ringPacked)

/// The features of the in-order scenarios: the split ones' (`Features.all`) and IN_ORDER.
let inOrderFeatures = Features.all.union(.inOrder)

/// How long the ring polls before it sleeps on its notifier under load: the queues' default.
let loadSpins: Int32 = 256

/// Every scenario of the suite, in report order.
///
func makeScenarios() -> [Scenario] {
    var scenarios: [Scenario] = []
    var seen: Set<String> = []
    func add(_ scenario: Scenario) {
        var scenario = scenario
        if case .roundTrip = scenario.workload { scenario.minimumCount = roundTripMinimum }
        let key = "\(scenario.workload)|\(scenario.transport.rawValue)"
        if seen.insert(key).inserted { scenarios.append(scenario) }
    }

    // MARK: In-process cycle

    var heap: HeapCycleBox?
    func heapCycle() throws -> HeapCycleBox {
        if let heap { return heap }
        let box = try HeapCycleBox()
        heap = box
        return box
    }
    var packedHeap: HeapCycleBox?
    func packedHeapCycle() throws -> HeapCycleBox {
        if let packedHeap { return packedHeap }
        let box = try HeapCycleBox(features: packedFeatures)
        packedHeap = box
        return box
    }
    var localRing: LocalRing?
    func cRing() throws -> LocalRing {
        if let localRing { return localRing }
        let ring = try LocalRing(payload: 64)
        localRing = ring
        return ring
    }
    let oneSegment = Workload.cycle(segments: 1, payload: 64)
    add(
        Scenario(
            workload: oneSegment,
            transport: .virtqueueHeap,
            run: { try heapCycle().runOneSegment($0) },
            inProcess: true
        )
    )
    add(
        Scenario(
            workload: oneSegment,
            transport: .virtqueueHeapPacked,
            run: { try packedHeapCycle().runOneSegment($0) },
            inProcess: true
        )
    )
    add(Scenario(workload: oneSegment, transport: .cRing, run: { try cRing().run($0) }, inProcess: true))
    // The hand-written C virtqueue: the one-segment special case, and chains with minimal and
    // with full checks (docs/performance.md, "What the C virtqueues check"); one queue each.
    func cVirtqueue(_ chain: LocalVirtqueue.Chain?) -> (Int) throws -> Sample {
        var queue: LocalVirtqueue?
        return { count in
            if queue == nil { queue = try LocalVirtqueue(payload: 64) }
            let local = queue.unsafelyUnwrapped
            guard let chain else { return try local.run(count) }
            return try local.run(count, chain: chain)
        }
    }
    add(Scenario(workload: oneSegment, transport: .cVirtqueue, run: cVirtqueue(nil), inProcess: true))
    add(
        Scenario(
            workload: oneSegment,
            transport: .cVirtqueueFull,
            run: cVirtqueue(.one(VQB_CHECKS_FULL)),
            inProcess: true
        )
    )
    let threeSegments = Workload.cycle(segments: 3, payload: 64)
    add(
        Scenario(
            workload: threeSegments,
            transport: .virtqueueHeap,
            run: { try heapCycle().runThreeSegments($0) },
            inProcess: true
        )
    )
    add(
        Scenario(
            workload: threeSegments,
            transport: .virtqueueHeapPacked,
            run: { try packedHeapCycle().runThreeSegments($0) },
            inProcess: true
        )
    )
    add(
        Scenario(
            workload: threeSegments,
            transport: .cVirtqueue,
            run: cVirtqueue(.three(VQB_CHECKS_MINIMAL)),
            inProcess: true
        )
    )
    add(
        Scenario(
            workload: threeSegments,
            transport: .cVirtqueueFull,
            run: cVirtqueue(.three(VQB_CHECKS_FULL)),
            inProcess: true
        )
    )

    // MARK: Cross-process throughput

    func addThroughput(size: Int, batch: Int) {
        let workload = Workload.throughput(size: size, batch: batch)
        // The Swift queues across processes: the parent drives a DriverQueue, a posix_spawned
        // child serves TouchDevice (see ProcessScenarios.swift).
        for sandboxed in [false, true] {
            add(
                Scenario(workload: workload, transport: sandboxed ? .virtqueueSandbox : .virtqueueSharedMemory) {
                    try ChildProcesses.throughput(sandboxed: sandboxed, size: size, batch: batch, count: $0)
                }
            )
        }
        // The packed ring and IN_ORDER beside the split one, for the two sizes the targets use.
        if batch == 32, size == 64 || size == 4096 {
            for (transport, features) in [
                (Transport.virtqueueSharedMemoryPacked, packedFeatures),
                (.virtqueueSharedMemoryInOrder, inOrderFeatures),
            ] {
                add(
                    Scenario(workload: workload, transport: transport) {
                        try ChildProcesses.throughput(
                            sandboxed: false,
                            size: size,
                            batch: batch,
                            count: $0,
                            features: features
                        )
                    }
                )
            }
        }
        add(
            Scenario(workload: workload, transport: .virtqueueThreads) {
                try HeapThreads.throughput(size: size, batch: batch, count: $0)
            }
        )
        for transport in [Transport.cRing, .cVirtqueue] {
            add(
                Scenario(workload: workload, transport: transport) {
                    try CBaseline.throughput(transport, size: size, batch: batch, count: $0, spins: loadSpins)
                }
            )
        }
        for transport in [Transport.pipe, .socketpair] {
            add(
                Scenario(workload: workload, transport: transport) {
                    try CBaseline.throughput(transport, size: size, batch: batch, count: $0, spins: -1)
                }
            )
        }
    }
    for size in [64, 4096] {
        for batch in [1, 32] { addThroughput(size: size, batch: batch) }
    }
    // The async driver on the same workload (AsyncScenarios.swift).
    add(
        Scenario(workload: .throughput(size: 64, batch: 32), transport: .virtqueueSharedMemoryAsync) {
            try AsyncChildProcesses.throughput(size: 64, batch: 32, count: $0)
        }
    )
    for size in sweepSizes { addThroughput(size: size, batch: 32) }

    // MARK: Round trip

    func addRoundTrip(size: Int, modes: [WaitMode]) {
        for mode in modes {
            let workload = Workload.roundTrip(size: size, mode: mode)
            // One request chain of `size` bytes (payload in place, only its header written per
            // request) and a 16-byte reply. busy-poll: waitForUsed(spins: .max); eventfd: spins 0.
            add(
                Scenario(workload: workload, transport: .virtqueueSharedMemory) {
                    try ChildProcesses.roundTrip(sandboxed: false, size: size, count: $0, busy: mode == .busyPoll)
                }
            )
            if size == 64 {
                for (transport, features) in [
                    (Transport.virtqueueSharedMemoryPacked, packedFeatures),
                    (.virtqueueSharedMemoryInOrder, inOrderFeatures),
                ] {
                    add(
                        Scenario(workload: workload, transport: transport) {
                            try ChildProcesses.roundTrip(
                                sandboxed: false,
                                size: size,
                                count: $0,
                                busy: mode == .busyPoll,
                                features: features
                            )
                        }
                    )
                }
            }
            if size == 64 {
                add(
                    Scenario(workload: workload, transport: .virtqueueSandbox) {
                        try ChildProcesses.roundTrip(sandboxed: true, size: size, count: $0, busy: mode == .busyPoll)
                    }
                )
            }
            add(
                Scenario(workload: workload, transport: .virtqueueThreads) {
                    try HeapThreads.roundTrip(size: size, count: $0, busy: mode == .busyPoll)
                }
            )
            let spins: Int32 = mode == .busyPoll ? -1 : 0
            add(
                Scenario(workload: workload, transport: .cRing) {
                    try CBaseline.roundTrip(.cRing, size: size, count: $0, spins: spins)
                }
            )
        }
        let blocking = Workload.roundTrip(size: size, mode: .blocking)
        for transport in [Transport.pipe, .socketpair] {
            add(
                Scenario(workload: blocking, transport: transport) {
                    try CBaseline.roundTrip(transport, size: size, count: $0, spins: -1)
                }
            )
        }
    }
    addRoundTrip(size: 64, modes: [.busyPoll, .eventfd])
    add(
        Scenario(workload: .roundTrip(size: 64, mode: .eventfd), transport: .virtqueueSharedMemoryAsync) {
            try AsyncChildProcesses.roundTrip(size: 64, count: $0)
        }
    )
    for size in sweepSizes { addRoundTrip(size: size, modes: [.busyPoll]) }
    QueueScaling.addScenarios(add)
    return scenarios
}

/// Round trips are reported as the median group of `VQB_GROUP`; a run has at least three groups.
let roundTripMinimum = 3 * Int(VQB_GROUP)
