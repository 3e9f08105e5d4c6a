import FileBackend
import Virtqueue
import VirtqueueConformance

/// The article's example backend under the conformance suite: two mappings of one file, and a
/// socket-pair notifier. It plugs in through nothing but `MemoryRegion` and `Notifier`.
struct FileConformanceBackend: ConformanceBackend {
    var name: String { "file" }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let file = try RegionFile(byteCount: layout.regionSize)
        let notifiers = try SocketNotifier.makePair()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(region: try file.map(), notifier: notifiers.driver, close: notifiers.driver.close),
                device: QueueEnd(region: try file.map(), notifier: notifiers.device, close: notifiers.device.close)
            )
        )
    }
}
