import Synchronization
import Virtqueue
import VirtqueueConformance

/// A heap region surrounded by guard bytes, so a test can prove that nothing outside the
/// region was touched. Copies share the same bytes (one side is the queue, the other the
/// test's hostile writer).
struct GuardedRegion: MemoryRegion, @unchecked Sendable {
    static let guardSize = 4096
    static let guardByte: UInt8 = 0xA5

    final class Storage: @unchecked Sendable {
        let base: UnsafeMutableRawPointer
        let count: Int
        let offset: Int

        init(count: Int, offset: Int) {
            self.count = count
            self.offset = offset
            base = .allocate(byteCount: count + 2 * GuardedRegion.guardSize + offset, alignment: 4096)
            base.initializeMemory(
                as: UInt8.self,
                repeating: GuardedRegion.guardByte,
                count: count + 2 * GuardedRegion.guardSize + offset
            )
            (base + GuardedRegion.guardSize + offset).initializeMemory(as: UInt8.self, repeating: 0, count: count)
        }

        deinit { base.deallocate() }
    }

    let storage: Storage

    /// - Parameter misalignment: Bytes by which to shift the region off a 16-byte boundary.
    init(count: Int, misalignment: Int = 0) {
        storage = Storage(count: count, offset: misalignment)
    }

    init(layout: RegionLayout) throws {
        self.init(count: layout.regionSize)
        try layout.initialize(self)
    }

    var count: Int { storage.count }

    func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(
            UnsafeMutableRawBufferPointer(start: storage.base + GuardedRegion.guardSize + storage.offset, count: count)
        )
    }

    /// Whether every guard byte before and after the region is intact.
    var guardsIntact: Bool {
        let before = UnsafeRawBufferPointer(start: storage.base, count: GuardedRegion.guardSize + storage.offset)
        let after = UnsafeRawBufferPointer(
            start: storage.base + GuardedRegion.guardSize + storage.offset + count,
            count: GuardedRegion.guardSize
        )
        return before.allSatisfy { $0 == GuardedRegion.guardByte } && after.allSatisfy { $0 == GuardedRegion.guardByte }
    }
}

/// One end of a notifier pair for single-threaded tests: counts the kicks it sends; a wait
/// returns at once if the peer kicked since the last wait and otherwise reports that it would
/// block (nothing else in the thread could wake it) with a code that does not break the queue.
final class CountingNotifier: Notifier, @unchecked Sendable {
    let kicks = Atomic<Int>(0)
    let pending = Atomic<Int>(0)
    weak var peer: CountingNotifier?

    /// A connected pair: the driver's kicks wake the device's waits and the other way round.
    static func makePair() -> (driver: CountingNotifier, device: CountingNotifier) {
        let driver = CountingNotifier()
        let device = CountingNotifier()
        driver.peer = device
        device.peer = driver
        return (driver, device)
    }

    func notify() throws(VirtqueueError) {
        kicks.add(1, ordering: .relaxed)
        peer?.pending.add(1, ordering: .relaxed)
    }

    func wait() throws(VirtqueueError) {
        if pending.exchange(0, ordering: .relaxed) == 0 {
            throw VirtqueueError(.notifierFailed, "single-threaded test: this wait would block")
        }
    }

    var kickCount: Int { kicks.load(ordering: .relaxed) }
}

/// The test's hostile peer: writes arbitrary values straight into ring memory, bypassing the
/// queues — the conformance library's writer, over a guarded region.
typealias RingWriter = HostileRingWriter<GuardedRegion>

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension DeviceQueue {
    /// The next request, or a test failure if there is none.
    mutating func requireRequest() throws -> DeviceRequest {
        guard let request = try nextRequest() else { throw TestFailure("expected an available request") }
        return request
    }
}

extension DeviceQueue where Memory: ~Copyable {
    /// A device on queue 0 of `layout` in `region` that resumes the ring at `cursor` (what a
    /// stopped device reported).
    init(resuming region: consuming Memory, _ layout: RegionLayout, at cursor: QueueCursor, notifier: Notify) throws {
        var placement = try layout.placement(ofQueue: 0)
        placement.cursor = cursor
        try self.init(memory: region, placement: placement, notifier: notifier, features: layout.features)
    }
}

extension DriverQueue {
    /// The next used chain, or a test failure if there is none.
    mutating func requireUsed() throws -> UsedChain {
        guard let used = try takeUsed() else { throw TestFailure("expected a used chain") }
        return used
    }
}
