import Virtqueue
import VirtqueueConformance
import VirtqueueHeap

/// The heap backend under the conformance suite: two handles to one allocation, a
/// ``VirtqueueHeap/HeapNotifier`` pair, and ``VirtqueueHeap/HeapBackend/launch(_:layout:queueIndex:spins:configuration:)``
/// for the launched device (a thread, which cannot be killed).
struct HeapConformanceBackend: ConformanceBackend {
    var name: String { "heap" }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let region = try HeapRegion(byteCount: layout.regionSize)
        let notifiers = HeapNotifier.makePair()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(region: region, notifier: notifiers.driver, close: notifiers.driver.close),
                device: QueueEnd(region: region, notifier: notifiers.device, close: notifiers.device.close)
            )
        )
    }

    func withProcessEnds<Visitor: ProcessEndsVisitor>(
        layout: RegionLayout,
        keeping side: QueueSide,
        _ visitor: Visitor
    ) throws -> ProcessEndsOutcome<Visitor.Output> {
        .notApplicable(reason: Self.inOneProcess)
    }

    /// Why ``ConformanceCheck/peerProcessDeath`` cannot apply to the heap backend.
    static let inOneProcess =
        "the heap backend's memory is an allocation of this process and its notifier a semaphore of this process: no descriptor exists that another process could hold, so no peer process can die holding an end"

    func withLaunchedDevice<Visitor: LaunchedDeviceVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output? {
        let device = try HeapBackend.launch(ConformanceDevice.self, layout: layout)
        return try visitor.visit(
            LaunchedDevice(region: device.makeRegion(), notifier: device.notifier, stop: device.stopForSuite)
        )
    }
}
