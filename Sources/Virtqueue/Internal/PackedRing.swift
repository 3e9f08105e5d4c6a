/// The packed ring engine: one packed virtqueue's three areas, resolved once, at set-up, from a
/// placement into this process's addresses — the packed counterpart of ``SplitRing``, for the
/// per-side state machine to drive once the queues run the packed ring. Its operations are the
/// pure ones of ``PackedRingFields``, ``PackedDescriptor``, ``PackedRingPosition`` and
/// ``PackedEventSuppression``, applied at this ring's addresses.
@usableFromInline
internal struct PackedRing {
    /// Queue size N (1 to 32768, not necessarily a power of two).
    @usableFromInline let size: Int
    /// The descriptor ring: N descriptors of 16 bytes.
    @usableFromInline let descriptors: UnsafeMutableRawPointer
    /// The driver event-suppression structure (the driver writes it, the device reads it).
    @usableFromInline let driverEvent: UnsafeMutableRawPointer
    /// The device event-suppression structure (the device writes it, the driver reads it).
    @usableFromInline let deviceEvent: UnsafeMutableRawPointer

    /// Resolves a packed `placement`'s areas through `memory`, as ``SplitRing`` does a split one.
    ///
    /// - Throws: ``VirtqueueError`` naming the placement value that does not fit, or
    ///   ``VirtqueueError/Code-swift.struct/invalidPlacement`` for a placement of another format.
    init(_ placement: QueuePlacement, memory: AddressMap) throws(VirtqueueError) {
        guard placement.format == .packed else {
            throw VirtqueueError(.invalidPlacement, "ring format \(placement.format) is not packed")
        }
        let pointers = try placement.resolveAreas(in: memory)
        size = placement.size
        descriptors = pointers[0]
        driverEvent = pointers[1]
        deviceEvent = pointers[2]
    }

    /// The descriptor at `position`.
    @inlinable @inline(__always)
    func descriptor(at position: PackedRingPosition) -> UnsafeMutableRawPointer {
        descriptors + PackedRingFields.descriptor(Int(position.index))
    }

    /// Reads the descriptor at `position` once (flags with acquire first).
    @inlinable @inline(__always)
    func loadDescriptor(at position: PackedRingPosition) -> PackedDescriptor {
        PackedDescriptor(loadingFrom: descriptor(at: position))
    }

    /// Writes the used descriptor for buffer `id` at `position`, with the device's wrap counter
    /// there, flags last with release.
    @inlinable @inline(__always)
    func storeUsed(id: UInt16, written: UInt32, at position: PackedRingPosition) {
        PackedDescriptor.used(id: id, written: written, wrap: position.wrapCounter).store(to: descriptor(at: position))
    }

    /// The event-suppression structure the driver (`driver`) or the device writes.
    @inlinable @inline(__always)
    func event(writtenByDriver driver: Bool) -> UnsafeMutableRawPointer {
        driver ? driverEvent : deviceEvent
    }
}

extension QueuePlacement {
    /// Resolves the three areas through `memory` (every mapping, whatever the buffer area), in
    /// the order descriptor, driver, device: each must lie inside one mapping, aligned as its
    /// format requires (``RingFormat/areas(size:)``) in this process too.
    ///
    /// - Throws: ``VirtqueueError`` naming the placement value that does not fit.
    func resolveAreas(in memory: AddressMap) throws(VirtqueueError) -> [UnsafeMutableRawPointer] {
        try validate()
        var pointers: [UnsafeMutableRawPointer] = []
        for (area, range) in zip(format.areas(size: size), areas.map(\.range)) {
            let bytes = try memory.contiguous(
                address: range.lowerBound,
                count: Int(range.upperBound - range.lowerBound),
                what: area.name
            )
            let base = bytes.baseAddress.unsafelyUnwrapped
            guard UInt(bitPattern: base) % UInt(area.alignment) == 0 else {
                throw VirtqueueError(
                    .misaligned,
                    "\(area.name) at bus address \(hex(range.lowerBound)) is mapped at 0x\(String(UInt(bitPattern: base), radix: 16)), not \(area.alignment)-byte aligned"
                )
            }
            pointers.append(base)
        }
        return pointers
    }
}
