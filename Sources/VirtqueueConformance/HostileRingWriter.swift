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
public struct HostileRingWriter<Region: GuestMemory & ~Copyable>: ~Copyable {
    /// `VIRTQ_DESC_F_NEXT`.
    public static var next: UInt16 { SplitRingFields.nextFlag }
    /// `VIRTQ_DESC_F_WRITE`: device-writable.
    public static var write: UInt16 { SplitRingFields.writeFlag }
    /// `VIRTQ_DESC_F_INDIRECT`.
    public static var indirect: UInt16 { SplitRingFields.indirectFlag }

    /// The memory the writer writes through.
    public let region: Region
    /// The region's layout.
    public let layout: RegionLayout
    /// The layout of the queue the writer attacks.
    public let queue: QueueLayout
    /// The bus address of each field of the queue's ring, from the ring core.
    public let fields: SplitRingAddresses

    /// Creates a writer for queue `queueIndex` of `region`.
    ///
    /// - Parameters:
    ///   - region: A handle to the shared memory (the attacking side's end).
    ///   - layout: The region's layout.
    ///   - queueIndex: The queue to write; must be one of the layout's queues.
    public init(region: consuming Region, layout: RegionLayout, queueIndex: Int = 0) {
        guard let placement = try? layout.placement(ofQueue: queueIndex) else {
            preconditionFailure("queue \(queueIndex) is not in the layout")
        }
        self.region = region
        self.layout = layout
        self.queue = layout.queues[queueIndex]
        self.fields = SplitRingAddresses(placement)
    }

    /// Stores `value`, little-endian, at bus address `address` of the memory.
    ///
    /// - Precondition: The value lies inside one mapping.
    public func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) {
        do {
            try region.withBytes(at: address, count: MemoryLayout<T>.size) { raw in
                raw.storeBytes(of: value.littleEndian, as: T.self)
            }
        } catch {
            preconditionFailure("hostile writer: \(error)")
        }
    }

    /// Stores `value`, little-endian, at byte `offset` (bus address) of the region.
    public func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        store(value, at: UInt64(offset))
    }

    /// Loads a little-endian value from bus address `address` of the memory.
    ///
    /// - Precondition: The value lies inside one mapping.
    public func load<T: FixedWidthInteger>(_: T.Type, at address: UInt64) -> T {
        do {
            return try region.withBytes(at: address, count: MemoryLayout<T>.size) { raw in
                T(littleEndian: raw.loadUnaligned(as: T.self))
            }
        } catch {
            preconditionFailure("hostile writer: \(error)")
        }
    }

    /// Loads a little-endian value from byte `offset` (bus address) of the region.
    public func load<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        load(type, at: UInt64(offset))
    }

    /// Writes descriptor `index` of the queue's descriptor table.
    public func descriptor(_ index: Int, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0) {
        descriptor(at: fields.descriptor(index), address: address, length: length, flags: flags, next: next)
    }

    /// Writes a 16-byte descriptor at any bus address (an indirect table's entry, say).
    public func descriptor(
        at address: UInt64,
        address value: UInt64,
        length: UInt32,
        flags: UInt16 = 0,
        next: UInt16 = 0
    ) {
        store(value, at: address)
        store(length, at: address + 8)
        store(flags, at: address + 12)
        store(next, at: address + 14)
    }

    /// Writes a 16-byte descriptor at any byte offset (an indirect table's entry, say).
    public func descriptor(at offset: Int, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0) {
        descriptor(at: UInt64(offset), address: address, length: length, flags: flags, next: next)
    }

    /// Writes `head` into slot `slot` (taken modulo the queue size) of the available ring.
    public func makeAvailable(head: UInt16, slot: Int) {
        store(head, at: fields.availableEntry(slot: slot))
    }

    /// `avail.idx`.
    public var availableIndex: UInt16 {
        get { load(UInt16.self, at: fields.availableIndex) }
        nonmutating set { store(newValue, at: fields.availableIndex) }
    }

    /// `used.idx`.
    public var usedIndex: UInt16 {
        get { load(UInt16.self, at: fields.usedIndex) }
        nonmutating set { store(newValue, at: fields.usedIndex) }
    }

    /// Writes used-ring element `slot` (taken modulo the queue size).
    public func usedElement(slot: Int, id: UInt32, length: UInt32) {
        let address = fields.usedElement(slot: slot)
        store(id, at: address)
        store(length, at: address + 4)
    }

    /// Reads used-ring element `slot` (taken modulo the queue size).
    public func usedElement(slot: Int) -> (id: UInt32, length: UInt32) {
        let address = fields.usedElement(slot: slot)
        return (load(UInt32.self, at: address), load(UInt32.self, at: address + 4))
    }

    // MARK: The packed ring

    /// The bus address of each field of the queue's ring, read as a packed ring.
    public var packedFields: PackedRingAddresses { PackedRingAddresses(fields.placement) }

    /// Writes packed descriptor `index` (taken modulo the queue size): `addr`, `len`, `id`, then
    /// `flags` (give the `AVAIL` / `USED` bits too, e.g. `PackedRingFields.availableFlags(wrap:)`).
    public func packedDescriptor(_ index: Int, address: UInt64, length: UInt32, id: UInt16, flags: UInt16) {
        packedDescriptor(at: packedFields.descriptor(index), address: address, length: length, id: id, flags: flags)
    }

    /// Writes a 16-byte packed descriptor at any bus address (a packed indirect table's entry, say).
    public func packedDescriptor(at address: UInt64, address value: UInt64, length: UInt32, id: UInt16, flags: UInt16) {
        store(value, at: address)
        store(length, at: address + 8)
        store(id, at: address + 12)
        store(flags, at: address + 14)
    }

    /// Reads packed descriptor `index` (taken modulo the queue size).
    public func packedDescriptor(_ index: Int) -> PackedDescriptor {
        packedDescriptor(at: packedFields.descriptor(index))
    }

    /// Reads a 16-byte packed descriptor at any bus address (a packed indirect table's entry, say).
    public func packedDescriptor(at address: UInt64) -> PackedDescriptor {
        PackedDescriptor(
            address: load(UInt64.self, at: address),
            length: load(UInt32.self, at: address + 8),
            id: load(UInt16.self, at: address + 12),
            flags: load(UInt16.self, at: address + 14)
        )
    }

    /// Writes a used descriptor at `index` for buffer `id`, as a device with wrap counter
    /// `wrap` would (`WRITE` when `length` is non-zero), or with the `flags` given.
    public func packedUsed(_ index: Int, id: UInt16, length: UInt32, wrap: Bool = true, flags: UInt16? = nil) {
        let used = PackedDescriptor.used(id: id, written: length, wrap: wrap)
        let address = packedFields.descriptor(index)
        store(used.length, at: address + 8)
        store(used.id, at: address + 12)
        store(flags ?? used.flags, at: address + 14)
    }

    /// The driver's event-suppression structure (packed ring).
    public var driverEventSuppression: PackedEventSuppression {
        get { PackedEventSuppression(word: load(UInt32.self, at: packedFields.driverEvent)) }
        nonmutating set { store(newValue.word, at: packedFields.driverEvent) }
    }

    /// The device's event-suppression structure (packed ring).
    public var deviceEventSuppression: PackedEventSuppression {
        get { PackedEventSuppression(word: load(UInt32.self, at: packedFields.deviceEvent)) }
        nonmutating set { store(newValue.word, at: packedFields.deviceEvent) }
    }

    /// The bus address (region offset) `offset` bytes into the data area.
    public func data(_ offset: Int) -> UInt64 { UInt64(layout.dataAreaOffset + offset) }

    /// `avail.flags`.
    public var availableFlags: UInt16 { load(UInt16.self, at: fields.availableFlags) }
    /// `used.flags`.
    public var usedFlags: UInt16 { load(UInt16.self, at: fields.usedFlags) }
    /// `used_event`, at the end of the available ring.
    public var usedEvent: UInt16 { load(UInt16.self, at: fields.usedEvent) }
    /// `avail_event`, at the end of the used ring.
    public var availableEvent: UInt16 {
        get { load(UInt16.self, at: fields.availableEvent) }
        nonmutating set { store(newValue, at: fields.availableEvent) }
    }
}

extension HostileRingWriter: Copyable where Region: Copyable {}
extension HostileRingWriter: Sendable where Region: Sendable & ~Copyable {}
