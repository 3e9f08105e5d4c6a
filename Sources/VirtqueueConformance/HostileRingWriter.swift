public import Virtqueue

/// A hostile peer: writes arbitrary values straight into ring memory, bypassing the queues, at
/// the offsets a `RegionLayout` gives (virtio 1.x split-ring layout; see
/// `docs/wire-format.md`).
///
/// The writer owns the *other* end's region: to test a driver, give the writer the device's
/// end, and the other way round. It never parses the ring; it only stores and loads
/// little-endian integers, so what it plants is exactly what a misbehaving peer in C would.
///
/// ```swift
/// let ring = HostileRingWriter(region: ends.device.region, layout: layout)
/// ring.usedElement(slot: 0, id: 5, length: 0)   // a chain that was never submitted
/// ring.usedIndex = 1
/// // driver.takeUsed() now throws usedIDNotInFlight
/// ```
public struct HostileRingWriter<Region: MemoryRegion & ~Copyable>: ~Copyable {
    /// `VIRTQ_DESC_F_NEXT`.
    public static var next: UInt16 { 1 }
    /// `VIRTQ_DESC_F_WRITE`: device-writable.
    public static var write: UInt16 { 2 }
    /// `VIRTQ_DESC_F_INDIRECT`.
    public static var indirect: UInt16 { 4 }

    /// The region the writer writes through.
    public let region: Region
    /// The region's layout.
    public let layout: RegionLayout
    /// The layout of the queue the writer attacks.
    public let queue: QueueLayout

    /// Creates a writer for queue `queueIndex` of `region`.
    ///
    /// - Parameters:
    ///   - region: A handle to the shared region (the attacking side's end).
    ///   - layout: The region's layout.
    ///   - queueIndex: The queue to write; must be one of the layout's queues.
    public init(region: consuming Region, layout: RegionLayout, queueIndex: Int = 0) {
        precondition(layout.queues.indices.contains(queueIndex), "queue \(queueIndex) is not in the layout")
        precondition(region.count >= layout.regionSize, "the region is smaller than the layout")
        self.region = region
        self.layout = layout
        self.queue = layout.queues[queueIndex]
    }

    /// Stores `value`, little-endian, at byte `offset` of the region.
    ///
    /// - Precondition: The value fits inside the region.
    public func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        region.withUnsafeMutableBytes { raw in
            precondition(
                offset >= 0 && offset <= raw.count - MemoryLayout<T>.size,
                "offset \(offset) is outside the region"
            )
            raw.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
        }
    }

    /// Loads a little-endian value from byte `offset` of the region.
    ///
    /// - Precondition: The value lies inside the region.
    public func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        region.withUnsafeMutableBytes { raw in
            precondition(
                offset >= 0 && offset <= raw.count - MemoryLayout<T>.size,
                "offset \(offset) is outside the region"
            )
            return T(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
    }

    /// Writes descriptor `index` of the queue's descriptor table.
    public func descriptor(_ index: Int, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0) {
        descriptor(
            at: queue.descriptorTableOffset + 16 * index,
            address: address,
            length: length,
            flags: flags,
            next: next
        )
    }

    /// Writes a 16-byte descriptor at any byte offset (an indirect table's entry, say).
    public func descriptor(at offset: Int, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0) {
        store(address, at: offset)
        store(length, at: offset + 8)
        store(flags, at: offset + 12)
        store(next, at: offset + 14)
    }

    /// Writes `head` into slot `slot` (taken modulo the queue size) of the available ring.
    public func makeAvailable(head: UInt16, slot: Int) {
        store(head, at: queue.availableRingOffset + 4 + 2 * (slot % queue.size))
    }

    /// `avail.idx`.
    public var availableIndex: UInt16 {
        get { load(UInt16.self, at: queue.availableRingOffset + 2) }
        nonmutating set { store(newValue, at: queue.availableRingOffset + 2) }
    }

    /// `used.idx`.
    public var usedIndex: UInt16 {
        get { load(UInt16.self, at: queue.usedRingOffset + 2) }
        nonmutating set { store(newValue, at: queue.usedRingOffset + 2) }
    }

    /// Writes used-ring element `slot` (taken modulo the queue size).
    public func usedElement(slot: Int, id: UInt32, length: UInt32) {
        let offset = queue.usedRingOffset + 4 + 8 * (slot % queue.size)
        store(id, at: offset)
        store(length, at: offset + 4)
    }

    /// Reads used-ring element `slot` (taken modulo the queue size).
    public func usedElement(slot: Int) -> (id: UInt32, length: UInt32) {
        let offset = queue.usedRingOffset + 4 + 8 * (slot % queue.size)
        return (load(UInt32.self, at: offset), load(UInt32.self, at: offset + 4))
    }

    /// The bus address (region offset) `offset` bytes into the data area.
    public func data(_ offset: Int) -> UInt64 { UInt64(layout.dataAreaOffset + offset) }

    /// `avail.flags`.
    public var availableFlags: UInt16 { load(UInt16.self, at: queue.availableRingOffset) }
    /// `used.flags`.
    public var usedFlags: UInt16 { load(UInt16.self, at: queue.usedRingOffset) }
    /// `used_event`, at the end of the available ring.
    public var usedEvent: UInt16 { load(UInt16.self, at: queue.availableRingOffset + 4 + 2 * queue.size) }
    /// `avail_event`, at the end of the used ring.
    public var availableEvent: UInt16 {
        get { load(UInt16.self, at: queue.usedRingOffset + 4 + 8 * queue.size) }
        nonmutating set { store(newValue, at: queue.usedRingOffset + 4 + 8 * queue.size) }
    }
}

extension HostileRingWriter: Copyable where Region: Copyable {}
extension HostileRingWriter: Sendable where Region: Sendable & ~Copyable {}
