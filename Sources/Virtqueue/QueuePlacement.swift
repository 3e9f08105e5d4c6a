/// The layout of a ring in memory: virtio's split ring (§2.7) or packed ring (§2.8).
///
/// The format decides the queue sizes allowed and the size and alignment of the three areas;
/// ``areas(size:)`` is the one table of them. The queues run either, behind the same API; a
/// placement's format and ``Features/ringPacked`` must agree.
public struct RingFormat: Hashable, Sendable, CustomStringConvertible {
    @usableFromInline let rawValue: UInt8

    @inlinable init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The split virtqueue of virtio 1.x §2.7: a descriptor table, an available ring and a used ring.
    public static let split = RingFormat(rawValue: 0)
    /// The packed virtqueue of virtio 1.1+ §2.8: one descriptor ring and two event-suppression
    /// structures (VIRTIO_F_RING_PACKED, bit 34).
    public static let packed = RingFormat(rawValue: 1)

    /// The largest queue size virtio allows, in either format.
    public static let maximumQueueSize = 32768

    /// The format numbered `value` in a region header (0 split, 1 packed), or `nil`.
    public init?(headerValue value: UInt16) {
        switch value {
        case 0: self = .split
        case 1: self = .packed
        default: return nil
        }
    }

    /// The number a region header gives this format.
    public var headerValue: UInt16 { UInt16(rawValue) }

    public var description: String {
        switch self {
        case .split: "split"
        case .packed: "packed"
        default: "format(\(rawValue))"
        }
    }

    /// Checks that `size` is a valid queue size for this format: for the split ring a power of
    /// two from 1 to 32768, for the packed ring any size from 1 to 32768.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/invalidQueueSize`` naming the value, or
    ///   ``VirtqueueError/Code-swift.struct/invalidPlacement`` for a format that is neither.
    public func validate(size: Int) throws(VirtqueueError) {
        let limit = Self.maximumQueueSize
        switch self {
        case .split:
            guard size >= 1, size <= limit, size & (size - 1) == 0 else {
                throw VirtqueueError(
                    .invalidQueueSize,
                    "queue size \(size) is not a power of two between 1 and \(limit)"
                )
            }
        case .packed:
            guard size >= 1, size <= limit else {
                throw VirtqueueError(.invalidQueueSize, "packed queue size \(size) is not between 1 and \(limit)")
            }
        default:
            throw VirtqueueError(.invalidPlacement, "ring format \(self) is neither split nor packed")
        }
    }

    /// The three areas of a queue of `size` in this format, in the order descriptor, driver,
    /// device: virtio's name for each, its bytes and its alignment.
    ///
    /// | format | descriptor area | driver area | device area |
    /// |---|---|---|---|
    /// | split | descriptor table, 16·N, 16 | available ring, 6 + 2·N, 2 | used ring, 6 + 8·N, 4 |
    /// | packed | descriptor ring, 16·N, 16 | driver event suppression, 4, 4 | device event suppression, 4, 4 |
    public func areas(size: Int) -> [(name: String, byteCount: Int, alignment: Int)] {
        if self == .packed {
            let event = PackedRingFields.eventSuppressionByteCount
            return [
                ("descriptor ring", PackedRingFields.descriptorRingByteCount(size: size), 16),
                ("driver event suppression", event, 4), ("device event suppression", event, 4),
            ]
        }
        let sizes = SplitRingFields.areaByteCounts(size: size)
        return [
            ("descriptor table", sizes.descriptor, 16), ("available ring", sizes.driver, 2),
            ("used ring", sizes.device, 4),
        ]
    }
}

/// Where a running ring stands: the index of the next entry each side will publish.
///
/// For the split ring both are free-running 16-bit indices. For the packed ring each is a
/// position in the descriptor ring (bits 0–14) and that side's wrap counter (bit 15), as
/// vhost-user's `SET_VRING_BASE` carries them (``PackedRingPosition/cursorValue``).
///
/// A new ring starts at zero. A device queue that stops reports its cursor
/// (``DeviceQueue/stop()``, vhost-user's `GET_VRING_BASE`), and a new device queue built with
/// that cursor resumes the ring where the first one left it (`SET_VRING_BASE`).
public struct QueueCursor: Hashable, Sendable, CustomStringConvertible {
    /// The free-running index of the next available-ring entry: the next one the driver will
    /// publish, which is also the next one the device will take.
    public var nextAvailable: UInt16
    /// The free-running index of the next used-ring entry the device will publish.
    public var nextUsed: UInt16

    /// Creates a cursor.
    public init(nextAvailable: UInt16 = 0, nextUsed: UInt16 = 0) {
        self.nextAvailable = nextAvailable
        self.nextUsed = nextUsed
    }

    /// A fresh split ring's cursor: both indices at zero.
    public static let start = QueueCursor()

    /// A fresh packed ring's cursor: both sides at position 0 with their wrap counters at 1
    /// (`0x8000`, as vhost-user's `SET_VRING_BASE` writes it; ``PackedRingPosition/cursorValue``).
    public static let packedStart = QueueCursor(
        nextAvailable: PackedRingPosition.start.cursorValue,
        nextUsed: PackedRingPosition.start.cursorValue
    )

    public var description: String { "(next available \(nextAvailable), next used \(nextUsed))" }
}

/// Where one virtqueue lies in guest memory and where it starts: what a queue is built from,
/// besides its memory and its notifier.
///
/// A placement names the ring format, the queue size, the bus addresses of the three areas
/// (virtio's names: the descriptor area, the driver area — the available ring — and the device
/// area — the used ring), the starting ``QueueCursor``, and, optionally, the bus addresses a
/// buffer must lie in. ``RegionLayout/placement(ofQueue:)`` produces placements for this
/// package's own regions; vhost-user's `SET_VRING_NUM`, `SET_VRING_ADDR` and `SET_VRING_BASE`
/// produce them for a virtual machine's rings.
public struct QueuePlacement: Hashable, Sendable {
    /// The ring format.
    public var format: RingFormat
    /// The queue size N.
    public var size: Int
    /// Bus address of the descriptor table (16-byte aligned).
    public var descriptorArea: UInt64
    /// Bus address of the available ring (2-byte aligned).
    public var driverArea: UInt64
    /// Bus address of the used ring (4-byte aligned).
    public var deviceArea: UInt64
    /// Where the ring starts.
    public var cursor: QueueCursor
    /// The bus addresses every buffer and indirect table must lie in, or `nil` for anywhere in
    /// the memory. This package's regions set it to the data area, so a driver cannot point a
    /// buffer at the header or the rings; a virtual machine's guest may use all of its memory.
    public var bufferArea: Range<UInt64>?

    /// Creates a placement.
    ///
    /// - Parameters:
    ///   - format: The ring format.
    ///   - size: The queue size; for the split ring a power of two from 1 to 32768, for the
    ///     packed ring any size from 1 to 32768.
    ///   - descriptorArea: Bus address of the descriptor table.
    ///   - driverArea: Bus address of the available ring.
    ///   - deviceArea: Bus address of the used ring.
    ///   - cursor: Where the ring starts; `nil` for a new ring of the format
    ///     (``QueueCursor/start``, or ``QueueCursor/packedStart`` for the packed ring).
    ///   - bufferArea: Where buffers must lie; `nil` for anywhere in memory.
    public init(
        format: RingFormat = .split,
        size: Int,
        descriptorArea: UInt64,
        driverArea: UInt64,
        deviceArea: UInt64,
        cursor: QueueCursor? = nil,
        bufferArea: Range<UInt64>? = nil
    ) {
        self.format = format
        self.size = size
        self.descriptorArea = descriptorArea
        self.driverArea = driverArea
        self.deviceArea = deviceArea
        self.cursor = cursor ?? (format == .packed ? .packedStart : .start)
        self.bufferArea = bufferArea
    }

    /// The three areas' bus ranges, with their names, in the order descriptor, driver, device
    /// (``RingFormat/areas(size:)``).
    public var areas: [(name: String, range: Range<UInt64>)] {
        zip(format.areas(size: size), [descriptorArea, driverArea, deviceArea]).map { area, address in
            (area.name, address..<address &+ UInt64(area.byteCount))
        }
    }

    /// Checks what a placement can be checked for without memory: the format, the size, the
    /// areas' alignment, that they do not wrap past 2^64 or overlap, and the cursor.
    ///
    /// - Throws: ``VirtqueueError`` naming the value: ``VirtqueueError/Code-swift.struct/invalidQueueSize``,
    ///   ``VirtqueueError/Code-swift.struct/misaligned`` or ``VirtqueueError/Code-swift.struct/invalidPlacement``.
    public func validate() throws(VirtqueueError) {
        try format.validate(size: size)
        let addresses = [descriptorArea, driverArea, deviceArea]
        for (area, address) in zip(format.areas(size: size), addresses) {
            guard address % UInt64(area.alignment) == 0 else {
                throw VirtqueueError(
                    .misaligned,
                    "\(area.name) at bus address \(hex(address)) is not \(area.alignment)-byte aligned"
                )
            }
            guard address <= UInt64.max - UInt64(area.byteCount) else {
                throw VirtqueueError(.invalidPlacement, "\(area.name) at bus address \(hex(address)) runs past 2^64")
            }
        }
        let areas = self.areas
        for first in areas.indices {
            for second in areas.indices where second > first && areas[first].range.overlaps(areas[second].range) {
                throw VirtqueueError(
                    .invalidPlacement,
                    "\(areas[first].name) \(hexRange(areas[first].range)) overlaps \(areas[second].name) \(hexRange(areas[second].range))"
                )
            }
        }
        if format == .packed {
            try validatePackedCursor()
            return
        }
        guard Int(cursor.nextAvailable &- cursor.nextUsed) <= size else {
            throw VirtqueueError(
                .invalidPlacement,
                "cursor \(cursor) has \(Int(cursor.nextAvailable &- cursor.nextUsed)) entries between its indices, more than the queue size \(size)"
            )
        }
    }

    /// A packed ring's cursor holds two positions (``PackedRingPosition/cursorValue``): each must
    /// lie in the ring, and the driver may be at most one ring ahead of the device.
    func validatePackedCursor() throws(VirtqueueError) {
        let available = PackedRingPosition(cursorValue: cursor.nextAvailable)
        let used = PackedRingPosition(cursorValue: cursor.nextUsed)
        for (name, position) in [("next available", available), ("next used", used)] where Int(position.index) >= size {
            throw VirtqueueError(
                .invalidPlacement,
                "cursor's \(name) position \(position) is not below the packed queue size \(size)"
            )
        }
        let ahead = available.distance(from: used, size: size)
        guard ahead <= size else {
            throw VirtqueueError(
                .invalidPlacement,
                "cursor \(available) is \(ahead) descriptors ahead of \(used), more than the packed queue size \(size)"
            )
        }
    }
}

/// Where each field of a split ring lies (virtio 1.x §2.7), relative to its area: the one place
/// in the package that computes a ring offset.
///
/// The ring core builds its own view from these, and so do the tools that play a peer — the
/// conformance suite's hostile writer, the fuzz harnesses — through ``SplitRingAddresses``.
public enum SplitRingFields {
    /// Bytes of one descriptor `{le64 addr, le32 len, le16 flags, le16 next}`.
    @inlinable public static var descriptorByteCount: Int { 16 }
    /// `VIRTQ_DESC_F_NEXT`: the chain continues at `next`.
    @inlinable public static var nextFlag: UInt16 { 1 }
    /// `VIRTQ_DESC_F_WRITE`: the buffer is device-writable.
    @inlinable public static var writeFlag: UInt16 { 2 }
    /// `VIRTQ_DESC_F_INDIRECT`: the buffer is a table of descriptors.
    @inlinable public static var indirectFlag: UInt16 { 4 }
    /// `VIRTQ_AVAIL_F_NO_INTERRUPT` and `VIRTQ_USED_F_NO_NOTIFY` (both 1): the side that writes
    /// it asks not to be notified.
    @inlinable public static var suppressNotificationsFlag: UInt16 { 1 }
    /// `avail.flags`, from the driver area.
    @inlinable public static var availableFlags: Int { 0 }
    /// `avail.idx`, from the driver area.
    @inlinable public static var availableIndex: Int { 2 }
    /// `avail.ring[slot]`, from the driver area.
    @inlinable public static func availableEntry(slot: Int) -> Int { 4 &+ 2 &* slot }
    /// `used_event`, from the driver area, for a queue of `size`.
    @inlinable public static func usedEvent(size: Int) -> Int { 4 &+ 2 &* size }
    /// `used.flags`, from the device area.
    @inlinable public static var usedFlags: Int { 0 }
    /// `used.idx`, from the device area.
    @inlinable public static var usedIndex: Int { 2 }
    /// `used.ring[slot]` (`{le32 id, le32 len}`), from the device area.
    @inlinable public static func usedElement(slot: Int) -> Int { 4 &+ 8 &* slot }
    /// `avail_event`, from the device area, for a queue of `size`.
    @inlinable public static func availableEvent(size: Int) -> Int { 4 &+ 8 &* size }

    /// Bytes of each area for a queue of `size`: 16·N, 6 + 2·N and 6 + 8·N.
    @inlinable public static func areaByteCounts(size: Int) -> (descriptor: Int, driver: Int, device: Int) {
        (16 &* size, 6 &+ 2 &* size, 6 &+ 8 &* size)
    }
}

/// The bus address of every field of one split ring: a peer's view, for tools that write ring
/// memory directly (a hostile peer in a test, a fuzz harness, a peer in another language's test).
public struct SplitRingAddresses: Hashable, Sendable {
    /// The placement the addresses come from.
    public let placement: QueuePlacement

    /// Creates the addresses of `placement`'s fields.
    public init(_ placement: QueuePlacement) { self.placement = placement }

    /// Descriptor `index` of the descriptor table.
    public func descriptor(_ index: Int) -> UInt64 {
        placement.descriptorArea &+ UInt64(index &* SplitRingFields.descriptorByteCount)
    }
    /// `avail.flags`.
    public var availableFlags: UInt64 { placement.driverArea &+ UInt64(SplitRingFields.availableFlags) }
    /// `avail.idx`.
    public var availableIndex: UInt64 { placement.driverArea &+ UInt64(SplitRingFields.availableIndex) }
    /// `avail.ring[slot % size]`.
    public func availableEntry(slot: Int) -> UInt64 {
        placement.driverArea &+ UInt64(SplitRingFields.availableEntry(slot: slot % placement.size))
    }
    /// `used_event`.
    public var usedEvent: UInt64 { placement.driverArea &+ UInt64(SplitRingFields.usedEvent(size: placement.size)) }
    /// `used.flags`.
    public var usedFlags: UInt64 { placement.deviceArea &+ UInt64(SplitRingFields.usedFlags) }
    /// `used.idx`.
    public var usedIndex: UInt64 { placement.deviceArea &+ UInt64(SplitRingFields.usedIndex) }
    /// `used.ring[slot % size]`.
    public func usedElement(slot: Int) -> UInt64 {
        placement.deviceArea &+ UInt64(SplitRingFields.usedElement(slot: slot % placement.size))
    }
    /// `avail_event`.
    public var availableEvent: UInt64 {
        placement.deviceArea &+ UInt64(SplitRingFields.availableEvent(size: placement.size))
    }
}
