public import Synchronization

/// Where each field of a packed ring lies (virtio 1.1+ §2.8), and what its bits mean: the one
/// place in the package that computes a packed ring offset or flag.
///
/// A packed queue of size N has three areas: the descriptor ring (N descriptors of 16 bytes,
/// 16-byte aligned) and two event-suppression structures of 4 bytes each (4-byte aligned), the
/// driver's (written by the driver, read by the device) and the device's (the mirror image).
/// `docs/wire-format.md` §12 gives the same tables. The packed ring engine and the tools that
/// play a peer (a hostile writer in a test, a fuzz harness) build their views from these.
public enum PackedRingFields {
    /// Bytes of one descriptor `{le64 addr, le32 len, le16 id, le16 flags}`.
    @inlinable public static var descriptorByteCount: Int { 16 }
    /// `addr`, from the descriptor.
    @inlinable public static var addressOffset: Int { 0 }
    /// `len`, from the descriptor.
    @inlinable public static var lengthOffset: Int { 8 }
    /// `id` (the buffer ID), from the descriptor.
    @inlinable public static var idOffset: Int { 12 }
    /// `flags`, from the descriptor.
    @inlinable public static var flagsOffset: Int { 14 }

    /// `VIRTQ_DESC_F_NEXT`: the list continues in the next descriptor of the ring.
    @inlinable public static var nextFlag: UInt16 { 1 }
    /// `VIRTQ_DESC_F_WRITE`: in an available descriptor, the element is device-writable; in a
    /// used one, the device wrote `len` bytes (without it `len` is reserved).
    @inlinable public static var writeFlag: UInt16 { 2 }
    /// `VIRTQ_DESC_F_INDIRECT`: the element is a table of `len / 16` descriptors.
    @inlinable public static var indirectFlag: UInt16 { 4 }
    /// `VIRTQ_DESC_F_AVAIL` (bit 7).
    @inlinable public static var availableFlag: UInt16 { 1 << 7 }
    /// `VIRTQ_DESC_F_USED` (bit 15).
    @inlinable public static var usedFlag: UInt16 { 1 << 15 }

    /// Bytes of the descriptor ring of a queue of `size`: 16·N.
    @inlinable public static func descriptorRingByteCount(size: Int) -> Int { 16 &* size }
    /// Offset of descriptor `index` from the descriptor ring.
    @inlinable public static func descriptor(_ index: Int) -> Int { 16 &* index }

    /// Bytes of one event-suppression structure `{le16 off_wrap, le16 flags}`.
    @inlinable public static var eventSuppressionByteCount: Int { 4 }
    /// `desc` (`off_wrap`: bits 0–14 the event offset, bit 15 its wrap counter), from the structure.
    @inlinable public static var eventOffWrapOffset: Int { 0 }
    /// `flags` (bits 0–1 the mode, the rest reserved), from the structure.
    @inlinable public static var eventFlagsOffset: Int { 2 }
    /// `RING_EVENT_FLAGS_ENABLE`: notify on every publication.
    @inlinable public static var eventEnable: UInt16 { 0 }
    /// `RING_EVENT_FLAGS_DISABLE`: do not notify.
    @inlinable public static var eventDisable: UInt16 { 1 }
    /// `RING_EVENT_FLAGS_DESC`: notify when the descriptor at `off_wrap` is published (only
    /// with VIRTIO_F_EVENT_IDX).
    @inlinable public static var eventDescriptor: UInt16 { 2 }
    /// Bit 15 of `off_wrap`: the wrap counter the event offset belongs to.
    @inlinable public static var eventWrapBit: UInt16 { 1 << 15 }

    /// The flags that mark a descriptor available for a driver whose wrap counter is `wrap`:
    /// `AVAIL` equal to it and `USED` its inverse (§2.8.1).
    @inlinable public static func availableFlags(wrap: Bool) -> UInt16 {
        wrap ? availableFlag : usedFlag
    }

    /// The flags that mark a descriptor used for a device whose wrap counter is `wrap`: `AVAIL`
    /// and `USED` both equal to it.
    @inlinable public static func usedFlags(wrap: Bool) -> UInt16 {
        wrap ? availableFlag | usedFlag : 0
    }

    /// Whether `flags` mark a descriptor available to a device that expects the driver's wrap
    /// counter to be `wrap`: `AVAIL` differs from `USED` and equals `wrap`.
    @inlinable public static func isAvailable(_ flags: UInt16, wrap: Bool) -> Bool {
        let available = flags & availableFlag != 0
        return available != (flags & usedFlag != 0) && available == wrap
    }

    /// Whether `flags` mark a descriptor used for a driver that expects the device's wrap
    /// counter to be `wrap`: `AVAIL` and `USED` both equal `wrap`.
    @inlinable public static func isUsed(_ flags: UInt16, wrap: Bool) -> Bool {
        flags & (availableFlag | usedFlag) == usedFlags(wrap: wrap)
    }
}

/// A position in a packed ring: a descriptor index below the queue size and the wrap counter
/// of the side standing there, which starts at 1 and flips each time the side passes the last
/// descriptor (§2.8.1).
public struct PackedRingPosition: Hashable, Sendable, CustomStringConvertible {
    /// The descriptor index, 0 ..< N.
    public var index: UInt16
    /// The ring wrap counter at this position.
    public var wrapCounter: Bool

    /// Creates a position.
    @inlinable public init(index: UInt16, wrapCounter: Bool) {
        self.index = index
        self.wrapCounter = wrapCounter
    }

    /// Where both sides of a fresh packed ring start: index 0, wrap counter 1.
    public static let start = PackedRingPosition(index: 0, wrapCounter: true)

    /// The position `count` descriptors on (`count` from 0 to `size`), flipping the wrap
    /// counter when it passes the end of a ring of `size`.
    @inlinable public func advanced(by count: Int, size: Int) -> PackedRingPosition {
        var next = Int(index) &+ count
        var wrap = wrapCounter
        if next >= size {
            next &-= size
            wrap.toggle()
        }
        return PackedRingPosition(index: UInt16(truncatingIfNeeded: next), wrapCounter: wrap)
    }

    /// How many descriptors this position is ahead of `earlier` in a ring of `size`, reading
    /// the two as at most one lap apart: 0 ..< 2·N.
    @inlinable public func distance(from earlier: PackedRingPosition, size: Int) -> Int {
        var ahead = Int(index) &- Int(earlier.index)
        if wrapCounter != earlier.wrapCounter { ahead &+= size }
        if ahead < 0 { ahead &+= 2 &* size }
        return ahead
    }

    /// The position as the 16 bits of an event's `off_wrap`, and of a cursor: the index in
    /// bits 0–14 and the wrap counter in bit 15.
    @inlinable public var cursorValue: UInt16 {
        (index & 0x7FFF) | (wrapCounter ? PackedRingFields.eventWrapBit : 0)
    }

    /// The position `value` holds in bits 0–14 (index) and bit 15 (wrap counter).
    @inlinable public init(cursorValue value: UInt16) {
        self.init(index: value & 0x7FFF, wrapCounter: value & PackedRingFields.eventWrapBit != 0)
    }

    public var description: String { "\(index) (wrap \(wrapCounter ? 1 : 0))" }
}

/// A packed descriptor as read once from the ring into a local: `{le64 addr, le32 len,
/// le16 id, le16 flags}`.
public struct PackedDescriptor: Hashable, Sendable {
    /// `addr`: the element's bus address (unused in a used descriptor).
    public var address: UInt64
    /// `len`: the element's bytes; in a used descriptor with `WRITE`, the bytes written.
    public var length: UInt32
    /// `id`: the buffer ID.
    public var id: UInt16
    /// `flags`: `NEXT`, `WRITE`, `INDIRECT`, `AVAIL`, `USED`.
    public var flags: UInt16

    /// Creates a descriptor.
    @inlinable public init(address: UInt64, length: UInt32, id: UInt16, flags: UInt16) {
        self.address = address
        self.length = length
        self.id = id
        self.flags = flags
    }

    /// Reads the descriptor at `pointer` once: `flags` first with acquire ordering, which
    /// publishes the rest (the peer wrote `flags` last, with release), then the other fields.
    /// The caller has checked that 16 bytes fit and that `pointer` is 2-byte aligned.
    @inlinable public init(loadingFrom pointer: UnsafeRawPointer) {
        let flagsField = UnsafeMutableRawPointer(mutating: pointer + PackedRingFields.flagsOffset)
        flags = UInt16(
            littleEndian: flagsField.assumingMemoryBound(to: Atomic<UInt16>.self).pointee.load(ordering: .acquiring)
        )
        address = UInt64(
            littleEndian: pointer.loadUnaligned(fromByteOffset: PackedRingFields.addressOffset, as: UInt64.self)
        )
        length = UInt32(
            littleEndian: pointer.loadUnaligned(fromByteOffset: PackedRingFields.lengthOffset, as: UInt32.self)
        )
        id = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: PackedRingFields.idOffset, as: UInt16.self))
    }

    /// Writes the descriptor at `pointer`: `addr`, `len` and `id`, then `flags` with release
    /// ordering, so a peer that acquires `flags` sees the rest (§2.8.21.1: "a suitable memory
    /// barrier before the flags update"). A driver writing a list stores every descriptor but
    /// the first this way, then the first.
    @inlinable public func store(to pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: address.littleEndian, toByteOffset: PackedRingFields.addressOffset, as: UInt64.self)
        pointer.storeBytes(of: length.littleEndian, toByteOffset: PackedRingFields.lengthOffset, as: UInt32.self)
        pointer.storeBytes(of: id.littleEndian, toByteOffset: PackedRingFields.idOffset, as: UInt16.self)
        (pointer + PackedRingFields.flagsOffset).assumingMemoryBound(to: Atomic<UInt16>.self).pointee.store(
            flags.littleEndian,
            ordering: .releasing
        )
    }

    /// The used descriptor a device with wrap counter `wrap` writes for buffer `id` into which
    /// it wrote `written` bytes: `WRITE` set when it wrote any, `AVAIL` and `USED` equal to `wrap`,
    /// `addr` 0.
    @inlinable public static func used(id: UInt16, written: UInt32, wrap: Bool) -> PackedDescriptor {
        let write = written > 0 ? PackedRingFields.writeFlag : 0
        return PackedDescriptor(
            address: 0,
            length: written,
            id: id,
            flags: PackedRingFields.usedFlags(wrap: wrap) | write
        )
    }

    /// The available descriptor a driver with wrap counter `wrap` writes for one element of
    /// buffer `id`: `flags` is `NEXT`, `WRITE` and `INDIRECT` as given (`elementFlags`), plus
    /// `AVAIL` = `wrap` and `USED` = not `wrap`.
    @inlinable public static func available(
        address: UInt64,
        length: UInt32,
        id: UInt16,
        elementFlags: UInt16,
        wrap: Bool
    ) -> PackedDescriptor {
        let element =
            elementFlags & (PackedRingFields.nextFlag | PackedRingFields.writeFlag | PackedRingFields.indirectFlag)
        return PackedDescriptor(
            address: address,
            length: length,
            id: id,
            flags: element | PackedRingFields.availableFlags(wrap: wrap)
        )
    }

    /// Whether this descriptor is available to a device expecting the driver's wrap counter `wrap`.
    @inlinable public func isAvailable(wrap: Bool) -> Bool { PackedRingFields.isAvailable(flags, wrap: wrap) }
    /// Whether this descriptor is used, for a driver expecting the device's wrap counter `wrap`.
    @inlinable public func isUsed(wrap: Bool) -> Bool { PackedRingFields.isUsed(flags, wrap: wrap) }
}

/// An event-suppression structure `{le16 off_wrap, le16 flags}` as read once (one 32-bit load,
/// so the two fields agree) or about to be written (one 32-bit store).
///
/// Each side writes its own and reads the peer's: the driver's asks the device for used-buffer
/// notifications, the device's asks the driver for available-buffer notifications.
public struct PackedEventSuppression: Hashable, Sendable, CustomStringConvertible {
    /// `off_wrap`: bits 0–14 the descriptor offset, bit 15 its wrap counter.
    public var offWrap: UInt16
    /// `flags`: bits 0–1 `ENABLE` (0), `DISABLE` (1) or `DESC` (2); 3 and bits 2–15 reserved.
    public var flags: UInt16

    /// Creates a structure from its two fields.
    @inlinable public init(offWrap: UInt16, flags: UInt16) {
        self.offWrap = offWrap
        self.flags = flags
    }

    /// `RING_EVENT_FLAGS_ENABLE`: notify me of every publication.
    public static let enable = PackedEventSuppression(offWrap: 0, flags: PackedRingFields.eventEnable)
    /// `RING_EVENT_FLAGS_DISABLE`: do not notify me.
    public static let disable = PackedEventSuppression(offWrap: 0, flags: PackedRingFields.eventDisable)

    /// `RING_EVENT_FLAGS_DESC`: notify me once the descriptor at `position` is published.
    @inlinable public static func descriptor(_ position: PackedRingPosition) -> PackedEventSuppression {
        PackedEventSuppression(offWrap: position.cursorValue, flags: PackedRingFields.eventDescriptor)
    }

    /// The structure as one little-endian 32-bit word: `off_wrap` in the low half.
    @inlinable public var word: UInt32 { UInt32(offWrap) | UInt32(flags) << 16 }

    /// The structure `word` holds (`off_wrap` in the low half).
    @inlinable public init(word: UInt32) {
        self.init(offWrap: UInt16(truncatingIfNeeded: word), flags: UInt16(truncatingIfNeeded: word >> 16))
    }

    /// Reads the structure at `pointer` (4-byte aligned) once, as one 32-bit load.
    @inlinable public init(loadingFrom pointer: UnsafeRawPointer) {
        let field = UnsafeMutableRawPointer(mutating: pointer).assumingMemoryBound(to: Atomic<UInt32>.self)
        self.init(word: UInt32(littleEndian: field.pointee.load(ordering: .relaxed)))
    }

    /// Writes the structure at `pointer` (4-byte aligned) as one 32-bit store, so the peer never
    /// sees a new mode with an old offset.
    @inlinable public func store(to pointer: UnsafeMutableRawPointer) {
        pointer.assumingMemoryBound(to: Atomic<UInt32>.self).pointee.store(word.littleEndian, ordering: .relaxed)
    }

    /// Whether a side that moved from `old` to `new` (`moves` descriptors published since its
    /// last check, in a ring of `size`) must notify the peer that wrote this structure.
    ///
    /// `DISABLE` says no and `ENABLE` yes. `DESC` is virtio's `vring_need_event` on `off_wrap`:
    /// the event offset is read in `new`'s lap when its wrap bit equals `new`'s wrap counter,
    /// else in the lap before (offset − N), and the peer is notified when that descriptor is one
    /// of the `moves` just published. The reserved mode 3 (and reserved bits) notify: an extra
    /// notification is harmless, a missed one leaves the peer asleep. `moves` counts every
    /// descriptor, so there is no 2^16 wrap to guard against; a peer's nonsense offset only
    /// costs it notifications. With no moves there is nothing to tell.
    @inlinable public func needsNotification(new: PackedRingPosition, moves: Int, size: Int) -> Bool {
        guard moves > 0 else { return false }
        switch flags {
        case PackedRingFields.eventDisable: return false
        case PackedRingFields.eventDescriptor:
            let event = PackedRingPosition(cursorValue: offWrap)
            var offset = Int(event.index)
            if event.wrapCounter != new.wrapCounter { offset &-= size }
            let behind = Int(new.index) &- offset &- 1
            return behind >= 0 && behind < moves
        default: return true
        }
    }

    public var description: String {
        switch flags {
        case PackedRingFields.eventEnable: "enable"
        case PackedRingFields.eventDisable: "disable"
        case PackedRingFields.eventDescriptor: "descriptor \(PackedRingPosition(cursorValue: offWrap))"
        default: "flags 0x\(String(flags, radix: 16)), off_wrap 0x\(String(offWrap, radix: 16))"
        }
    }
}

/// The bus address of every field of one packed ring: a peer's view, for tools that write ring
/// memory directly (a hostile peer in a test, a fuzz harness), as ``SplitRingAddresses`` is for
/// the split ring.
public struct PackedRingAddresses: Hashable, Sendable {
    /// The placement the addresses come from.
    public let placement: QueuePlacement

    /// Creates the addresses of `placement`'s fields.
    public init(_ placement: QueuePlacement) { self.placement = placement }

    /// Descriptor `index % size` of the descriptor ring.
    public func descriptor(_ index: Int) -> UInt64 {
        placement.descriptorArea &+ UInt64(PackedRingFields.descriptor(index % placement.size))
    }
    /// The `flags` of descriptor `index % size`.
    public func descriptorFlags(_ index: Int) -> UInt64 {
        descriptor(index) &+ UInt64(PackedRingFields.flagsOffset)
    }
    /// The driver event-suppression structure (`off_wrap`, then `flags`).
    public var driverEvent: UInt64 { placement.driverArea }
    /// The device event-suppression structure (`off_wrap`, then `flags`).
    public var deviceEvent: UInt64 { placement.deviceArea }
}

extension QueueCursor {
    /// A packed ring's cursor: the driver's next available position (the next the device reads)
    /// and the device's next used position (the next the driver reads), each with its wrap
    /// counter — in ``nextAvailable`` and ``nextUsed`` as ``PackedRingPosition/cursorValue``,
    /// the form vhost-user's `GET_VRING_BASE` and `SET_VRING_BASE` carry.
    public init(available: PackedRingPosition, used: PackedRingPosition) {
        self.init(nextAvailable: available.cursorValue, nextUsed: used.cursorValue)
    }

    /// Packed ring: the available position and its wrap counter, from ``nextAvailable``.
    public var availablePosition: PackedRingPosition { PackedRingPosition(cursorValue: nextAvailable) }

    /// Packed ring: the used position and its wrap counter, from ``nextUsed``.
    public var usedPosition: PackedRingPosition { PackedRingPosition(cursorValue: nextUsed) }
}
