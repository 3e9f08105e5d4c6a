import Virtqueue
import VirtqueueConformance
import VirtqueueHeap

/// Guest memory of three mappings under the conformance suite: the header and the rings in one
/// heap allocation, the data area cut in two more, adjacent in bus address but not in this
/// process. The cut falls on a 64-byte boundary just past the middle: a pool of larger buffers has
/// a slot that straddles it (the driver leaves that slot out), and a buffer planted across it
/// reaches the device as two segments. Notifiers are a ``VirtqueueHeap/HeapNotifier`` pair.
struct MultiMappingConformanceBackend: ConformanceBackend {
    var name: String { "multi-mapping" }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let memory = try Self.memory(for: layout)
        let notifiers = HeapNotifier.makePair()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(region: memory, notifier: notifiers.driver, close: notifiers.driver.close),
                device: QueueEnd(region: memory, notifier: notifiers.device, close: notifiers.device.close)
            )
        )
    }

    func withProcessEnds<Visitor: ProcessEndsVisitor>(
        layout: RegionLayout,
        keeping side: QueueSide,
        _ visitor: Visitor
    ) throws -> ProcessEndsOutcome<Visitor.Output> {
        .notApplicable(
            reason:
                "the memory is three heap allocations of this process and the notifier a HeapNotifier (a semaphore of this process): no descriptor exists that another process could hold"
        )
    }

    /// Three mappings covering `0..<layout.regionSize`: header and rings, then the data area's
    /// two parts, split 64 bytes past its middle (rounded down to 64).
    static func memory(for layout: RegionLayout) throws -> HeapGuestMemory {
        let data = UInt64(layout.dataAreaOffset)
        let cut = data + UInt64((layout.dataAreaSize / 2 + 64) & ~63)
        let end = UInt64(layout.regionSize)
        guard layout.dataAreaSize >= 256 else {
            return try HeapGuestMemory(mappings: [(0, Int(data)), (data, Int(end - data))].filter { $0.1 > 0 })
        }
        return try HeapGuestMemory(mappings: [
            (busAddress: 0, byteCount: Int(data)),
            (busAddress: data, byteCount: Int(cut - data)),
            (busAddress: cut, byteCount: Int(end - cut)),
        ])
    }
}
