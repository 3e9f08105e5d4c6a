import Synchronization
import Virtqueue

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
/// queues, at the offsets `docs/wire-format.md` specifies.
struct RingWriter {
    let region: GuardedRegion
    let queue: QueueLayout
    let layout: RegionLayout

    init(region: GuardedRegion, layout: RegionLayout, queueIndex: Int = 0) {
        self.region = region
        self.layout = layout
        self.queue = layout.queues[queueIndex]
    }

    func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        region.withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self) }
    }

    func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        region.withUnsafeMutableBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }

    func descriptor(_ index: Int, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0) {
        descriptor(
            at: queue.descriptorTableOffset + 16 * index,
            address: address,
            length: length,
            flags: flags,
            next: next
        )
    }

    func descriptor(at offset: Int, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0) {
        store(address, at: offset)
        store(length, at: offset + 8)
        store(flags, at: offset + 12)
        store(next, at: offset + 14)
    }

    func makeAvailable(head: UInt16, slot: Int) {
        store(head, at: queue.availableRingOffset + 4 + 2 * (slot % queue.size))
    }

    var availableIndex: UInt16 {
        get { load(UInt16.self, at: queue.availableRingOffset + 2) }
        nonmutating set { store(newValue, at: queue.availableRingOffset + 2) }
    }

    var usedIndex: UInt16 {
        get { load(UInt16.self, at: queue.usedRingOffset + 2) }
        nonmutating set { store(newValue, at: queue.usedRingOffset + 2) }
    }

    func usedElement(slot: Int, id: UInt32, length: UInt32) {
        let offset = queue.usedRingOffset + 4 + 8 * (slot % queue.size)
        store(id, at: offset)
        store(length, at: offset + 4)
    }

    func usedElement(slot: Int) -> (id: UInt32, length: UInt32) {
        let offset = queue.usedRingOffset + 4 + 8 * (slot % queue.size)
        return (load(UInt32.self, at: offset), load(UInt32.self, at: offset + 4))
    }

    /// A bus address inside the data area.
    func data(_ offset: Int) -> UInt64 { UInt64(layout.dataAreaOffset + offset) }

    /// Offset of a descriptor or ring field, for the flags/event tests.
    var availableFlags: UInt16 { load(UInt16.self, at: queue.availableRingOffset) }
    var usedFlags: UInt16 { load(UInt16.self, at: queue.usedRingOffset) }
    var usedEvent: UInt16 { load(UInt16.self, at: queue.availableRingOffset + 4 + 2 * queue.size) }
    var availableEvent: UInt16 {
        get { load(UInt16.self, at: queue.usedRingOffset + 4 + 8 * queue.size) }
        nonmutating set { store(newValue, at: queue.usedRingOffset + 4 + 8 * queue.size) }
    }
}

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

extension DriverQueue {
    /// The next used chain, or a test failure if there is none.
    mutating func requireUsed() throws -> UsedChain {
        guard let used = try takeUsed() else { throw TestFailure("expected a used chain") }
        return used
    }
}
