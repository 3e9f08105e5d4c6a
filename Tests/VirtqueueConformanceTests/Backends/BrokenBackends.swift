import CVirtqueueSystem
import FileBackend
import Glibc
import Synchronization
import SystemPackage
import Virtqueue
import VirtqueueConformance
import VirtqueueHeap
import VirtqueueSharedMemory

/// Deliberately broken backends, each wrong in one way: the suite must fail each of them loudly,
/// naming the right check. Most are built on the heap backend, in one process.

/// A broken backend in one process: ``ConformanceCheck/peerProcessDeath`` does not apply.
protocol SingleProcessBackend: ConformanceBackend {}

extension SingleProcessBackend {
    func withProcessEnds<Visitor: ProcessEndsVisitor>(
        layout: RegionLayout,
        keeping side: QueueSide,
        _ visitor: Visitor
    ) throws -> ProcessEndsOutcome<Visitor.Output> {
        .notApplicable(reason: "a broken heap backend, in one process")
    }
}

/// Each notifier drops every other kick: a lost wake-up waiting to happen.
struct KickDroppingBackend: SingleProcessBackend {
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
struct SplitMemoryBackend: SingleProcessBackend {
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
struct DeafToCloseBackend: SingleProcessBackend {
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
struct ShortRegionBackend: SingleProcessBackend {
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
struct SilentNotifierBackend: SingleProcessBackend {
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
struct SpinningSilentNotifierBackend: SingleProcessBackend {
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

/// A notifier over two eventfds, one per direction, that hears a peer *close* — `close` sets a
/// flag both ends share in this process and wakes both — but not a peer process *die*: an
/// eventfd has no other end to hang up, and this process holds both. Every in-process check
/// passes (``ConformanceCheck/notifierEndsWaitOnPeerClose`` too); only
/// ``ConformanceCheck/peerProcessDeath`` catches it.
struct DeathBlindBackend: ConformanceBackend {
    var name: String { "death-blind" }

    /// The two eventfds, and the flag `close` sets.
    final class Channels: Sendable {
        let towardsDevice: CInt
        let towardsDriver: CInt
        let closed = Atomic<Bool>(false)

        init() throws {
            towardsDevice = vq_eventfd()
            towardsDriver = vq_eventfd()
            guard towardsDevice >= 0, towardsDriver >= 0 else { throw Errno(rawValue: errno) }
        }

        deinit {
            _ = Glibc.close(towardsDevice)
            _ = Glibc.close(towardsDriver)
        }

        func close() {
            closed.store(true, ordering: .releasing)
            _ = vq_eventfd_signal(towardsDevice)
            _ = vq_eventfd_signal(towardsDriver)
        }
    }

    struct BlindNotifier: Notifier {
        let channels: Channels
        let isDriver: Bool

        func notify() throws(VirtqueueError) {
            _ = vq_eventfd_signal(isDriver ? channels.towardsDevice : channels.towardsDriver)
        }

        func wait() throws(VirtqueueError) {
            let descriptor = isDriver ? channels.towardsDriver : channels.towardsDevice
            while true {
                if channels.closed.load(ordering: .acquiring) {
                    throw VirtqueueError(.peerDied, "the peer closed its end")
                }
                var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                guard poll(&entry, 1, -1) > 0 else { continue }
                if vq_eventfd_drain(descriptor) > 0, !channels.closed.load(ordering: .acquiring) { return }
            }
        }
    }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let region = try HeapRegion(byteCount: layout.regionSize)
        let channels = try Channels()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(
                    region: region,
                    notifier: BlindNotifier(channels: channels, isDriver: true),
                    close: channels.close
                ),
                device: QueueEnd(
                    region: region,
                    notifier: BlindNotifier(channels: channels, isDriver: false),
                    close: channels.close
                )
            )
        )
    }

    /// The other side gets copies of both eventfds and of the memfd; this process keeps the
    /// eventfds too (its notifier needs both), so nothing closes when the helper dies.
    func withProcessEnds<Visitor: ProcessEndsVisitor>(
        layout: RegionLayout,
        keeping side: QueueSide,
        _ visitor: Visitor
    ) throws -> ProcessEndsOutcome<Visitor.Output> {
        let file = try SharedMemoryFile.create(byteCount: layout.regionSize, name: "death-blind")
        let channels = try Channels()
        let local = BlindNotifier(channels: channels, isDriver: side == .driver)
        let remote = PortableEnd(
            mappings: [
                PortableMapping(descriptor: try file.duplicateFileDescriptor().rawValue, byteCount: layout.regionSize)
            ],
            notifier: PortableNotifier(
                notifyDescriptor: vq_dup_cloexec(side == .driver ? channels.towardsDriver : channels.towardsDevice, 0),
                waitDescriptor: vq_dup_cloexec(side == .driver ? channels.towardsDevice : channels.towardsDriver, 0)
            )
        )
        return .visited(
            try visitor.visit(
                ProcessEnds(
                    local: QueueEnd(region: try file.map(), notifier: local, close: channels.close),
                    remote: remote
                )
            )
        )
    }
}

/// Hands the other process a different file than the one this process maps: the helper finds no
/// region header there, says so, and exits before a single chain crosses.
struct ForeignMemoryBackend: ConformanceBackend {
    var name: String { "foreign-memory" }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        try FileConformanceBackend().withQueueEnds(layout: layout, visitor)
    }

    func withProcessEnds<Visitor: ProcessEndsVisitor>(
        layout: RegionLayout,
        keeping side: QueueSide,
        _ visitor: Visitor
    ) throws -> ProcessEndsOutcome<Visitor.Output> {
        let file = try RegionFile(byteCount: layout.regionSize)
        let other = try RegionFile(byteCount: layout.regionSize)
        let (local, socket) = try FileConformanceBackend.notifierAndPeerSocket()
        let remote = PortableEnd(
            mappings: [PortableMapping(descriptor: try duplicate(other.fileDescriptor), byteCount: layout.regionSize)],
            notifier: PortableNotifier(socket: socket)
        )
        return .visited(
            try visitor.visit(
                ProcessEnds(
                    local: QueueEnd(region: try file.map(), notifier: local, close: local.close),
                    remote: remote
                )
            )
        )
    }
}
