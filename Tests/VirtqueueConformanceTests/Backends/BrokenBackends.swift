import Glibc
import Synchronization
import Virtqueue
import VirtqueueConformance
import VirtqueueHeap

/// Deliberately broken backends, each wrong in one way, built on the heap backend: the suite must
/// fail each of them loudly, naming the right check.

/// Each notifier drops every other kick: a lost wake-up waiting to happen.
struct KickDroppingBackend: ConformanceBackend {
    var name: String { "kick-dropping" }

    struct DroppingNotifier: Notifier {
        let base: HeapNotifier
        let kicks = Counter()

        func notify() throws(VirtqueueError) {
            if kicks.value.add(1, ordering: .relaxed).newValue.isMultiple(of: 2) { return }
            try base.notify()
        }

        func wait() throws(VirtqueueError) { try base.wait() }
    }

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let region = try HeapRegion(byteCount: layout.regionSize)
        let notifiers = HeapNotifier.makePair()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(
                    region: region,
                    notifier: DroppingNotifier(base: notifiers.driver),
                    close: notifiers.driver.close
                ),
                device: QueueEnd(
                    region: region,
                    notifier: DroppingNotifier(base: notifiers.device),
                    close: notifiers.device.close
                )
            )
        )
    }
}

/// The driver's and the device's "ends" are two different allocations.
struct SplitMemoryBackend: ConformanceBackend {
    var name: String { "split-memory" }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let notifiers = HeapNotifier.makePair()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(
                    region: try HeapRegion(byteCount: layout.regionSize),
                    notifier: notifiers.driver,
                    close: notifiers.driver.close
                ),
                device: QueueEnd(
                    region: try HeapRegion(byteCount: layout.regionSize),
                    notifier: notifiers.device,
                    close: notifiers.device.close
                )
            )
        )
    }
}

/// Closing an end does nothing, so a waiting peer never learns that this side is gone.
struct DeafToCloseBackend: ConformanceBackend {
    var name: String { "deaf-to-close" }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let region = try HeapRegion(byteCount: layout.regionSize)
        let notifiers = HeapNotifier.makePair()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(region: region, notifier: notifiers.driver, close: {}),
                device: QueueEnd(region: region, notifier: notifiers.device, close: {})
            )
        )
    }
}

/// The region is one page short of what the layout needs.
struct ShortRegionBackend: ConformanceBackend {
    var name: String { "short-region" }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let region = try HeapRegion(byteCount: max(layout.regionSize - 4096, 64))
        let notifiers = HeapNotifier.makePair()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(region: region, notifier: notifiers.driver, close: notifiers.driver.close),
                device: QueueEnd(region: region, notifier: notifiers.device, close: notifiers.device.close)
            )
        )
    }
}

/// Each notifier drops every kick, and its wait sleeps until the peer closes: nothing is ever
/// delivered.
struct SilentNotifierBackend: ConformanceBackend {
    var name: String { "silent" }

    struct SilentNotifier: Notifier {
        let base: HeapNotifier

        func notify() throws(VirtqueueError) {}

        func wait() throws(VirtqueueError) { try base.wait() }
    }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let region = try HeapRegion(byteCount: layout.regionSize)
        let notifiers = HeapNotifier.makePair()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(
                    region: region,
                    notifier: SilentNotifier(base: notifiers.driver),
                    close: notifiers.driver.close
                ),
                device: QueueEnd(
                    region: region,
                    notifier: SilentNotifier(base: notifiers.device),
                    close: notifiers.device.close
                )
            )
        )
    }
}

/// Each notifier drops every kick, and its wait returns at once (a spurious wake-up, which the
/// rules allow) until the peer closes: the queues then poll, and every check that only needs
/// waits to *return* passes — which is why ``ConformanceCheck/notifierDeliversKicks`` exists.
struct SpinningSilentNotifierBackend: ConformanceBackend {
    var name: String { "silent-spinning" }

    struct SpinningNotifier: Notifier {
        let closed: Flags
        let isDriver: Bool

        func notify() throws(VirtqueueError) {}

        func wait() throws(VirtqueueError) {
            let peerClosed =
                isDriver ? closed.device.load(ordering: .acquiring) : closed.driver.load(ordering: .acquiring)
            if peerClosed {
                throw VirtqueueError(.peerDied, "the peer closed its end")
            }
            sched_yield()
        }
    }

    final class Flags: Sendable {
        let driver = Atomic<Bool>(false)
        let device = Atomic<Bool>(false)
    }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let region = try HeapRegion(byteCount: layout.regionSize)
        let closed = Flags()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(
                    region: region,
                    notifier: SpinningNotifier(closed: closed, isDriver: true),
                    close: { closed.driver.store(true, ordering: .releasing) }
                ),
                device: QueueEnd(
                    region: region,
                    notifier: SpinningNotifier(closed: closed, isDriver: false),
                    close: { closed.device.store(true, ordering: .releasing) }
                )
            )
        )
    }
}
