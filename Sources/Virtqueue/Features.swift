/// Feature bits negotiated between driver and device: all 64 of virtio's, numbered as in virtio 1.x.
///
/// Virtio splits the bits in three (virtio 1.3 §6): bits 24 to 41 are *transport* bits, which
/// change how the rings behave and so concern the ring core; bits 42 to 49 are reserved; every
/// other bit (0 to 23, 50 to 63) belongs to the device type — virtio-blk's `SEG_MAX` or
/// virtio-net's `MRG_RXBUF`, say. Device-type bits pass through the ring core untouched, to the
/// device code. The ring core acts on the transport bits it implements (``implementedTransport``)
/// and refuses, with an error naming the bit, to run a queue with any other transport bit.
///
/// For this package's own regions the creator writes the negotiated set into the region header,
/// and both queues read it from there. Under vhost-user it comes from `SET_FEATURES`.
public struct Features: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Creates the set holding the single feature `bit` (0 to 63).
    ///
    /// - Precondition: `bit` is below 64 (a caller mistake, never peer data).
    public init(bit: Int) {
        precondition((0..<64).contains(bit), "feature bit \(bit) is not between 0 and 63")
        self.init(rawValue: 1 << UInt64(bit))
    }

    // MARK: Transport bits (24 to 41)

    /// VIRTIO_F_NOTIFY_ON_EMPTY (bit 24, legacy only).
    public static let notifyOnEmpty = Features(rawValue: 1 << 24)
    /// VIRTIO_F_ANY_LAYOUT (bit 27, legacy only; implied by VERSION_1).
    public static let anyLayout = Features(rawValue: 1 << 27)
    /// VIRTIO_F_INDIRECT_DESC (bit 28): a descriptor may point at a table of descriptors.
    public static let indirectDescriptors = Features(rawValue: 1 << 28)
    /// VIRTIO_F_EVENT_IDX (bit 29): `used_event` / `avail_event` replace the flag-based
    /// notification suppression.
    public static let eventIndex = Features(rawValue: 1 << 29)
    /// VIRTIO_F_VERSION_1 (bit 32): virtio 1.x semantics, little-endian ring. Always set.
    public static let version1 = Features(rawValue: 1 << 32)
    /// VIRTIO_F_ACCESS_PLATFORM (bit 33): addresses go through a platform IOMMU.
    public static let accessPlatform = Features(rawValue: 1 << 33)
    /// VIRTIO_F_RING_PACKED (bit 34): the packed ring layout of virtio 1.1+ §2.8 — one
    /// descriptor ring of `{le64 addr, le32 len, le16 id, le16 flags}` whose `AVAIL` / `USED` bits
    /// and each side's wrap counter say who owns each descriptor, and two event-suppression
    /// structures in place of the split ring's flags and event indices (``PackedRingFields``,
    /// ``RingFormat/packed``, a region header's ring format). The queues run it behind the same
    /// API as the split ring, for a placement of format ``RingFormat/packed``.
    public static let ringPacked = Features(rawValue: 1 << 34)
    /// VIRTIO_F_IN_ORDER (bit 35): the device uses buffers in the order they were made
    /// available, and may report a batch with one used entry (the last buffer's), which stands
    /// for every buffer before it. Both rings run it on both sides behind the same calls
    /// (``DriverQueue``, ``DeviceQueue``; docs/wire-format.md §6.4, and §12.6 for the packed
    /// ring, whose batch is one used descriptor that both sides skip past with its buffers'
    /// descriptors).
    public static let inOrder = Features(rawValue: 1 << 35)
    /// VIRTIO_F_ORDER_PLATFORM (bit 36): platform-strength memory barriers.
    public static let orderPlatform = Features(rawValue: 1 << 36)
    /// VIRTIO_F_SR_IOV (bit 37): single-root I/O virtualization.
    public static let singleRootIOV = Features(rawValue: 1 << 37)
    /// VIRTIO_F_NOTIFICATION_DATA (bit 38): driver notifications carry ring position data.
    public static let notificationData = Features(rawValue: 1 << 38)
    /// VIRTIO_F_NOTIF_CONFIG_DATA (bit 39): notifications carry a device-supplied value.
    public static let notificationConfigData = Features(rawValue: 1 << 39)
    /// VIRTIO_F_RING_RESET (bit 40): queues can be reset one by one.
    public static let ringReset = Features(rawValue: 1 << 40)
    /// VIRTIO_F_ADMIN_VQ (bit 41): an administration virtqueue.
    public static let adminQueue = Features(rawValue: 1 << 41)

    /// Bits 24 to 41: the transport bits, which concern the rings.
    public static let transport = Features(rawValue: ((1 << 42) - 1) & ~((1 << 24) - 1))
    /// Bits 42 to 49: reserved by virtio for future extensions; never negotiated.
    public static let reserved = Features(rawValue: ((1 << 50) - 1) & ~((1 << 42) - 1))
    /// Bits 0 to 23 and 50 to 63: the device type's bits, passed through to the device code.
    public static let deviceType = Features(rawValue: ~(transport.rawValue | reserved.rawValue))

    /// The transport bits the ring core implements: INDIRECT_DESC, EVENT_IDX, VERSION_1,
    /// RING_PACKED and IN_ORDER (on either ring).
    public static let implementedTransport: Features = [
        .indirectDescriptors, .eventIndex, .version1, .ringPacked, .inOrder,
    ]

    /// The transport features of the split ring that a queue runs whatever the code on either
    /// side does: INDIRECT_DESC, EVENT_IDX and VERSION_1. Two implemented bits are chosen, not
    /// implied: add ``ringPacked`` to run the packed ring instead (a region or placement of that
    /// format; the queues' API is the same), or ``inOrder``, which changes the order the driver
    /// sees its chains come back in and has the driver build one chain at a time. Device-type bits
    /// are the device's to offer; add them to this set where a device supports them.
    public static let all: Features = implementedTransport.subtracting([.ringPacked, .inOrder])

    /// The features both sides accept: those the device offers and the driver wants, less the
    /// transport and reserved bits the ring core does not implement, plus ``version1``, which is
    /// mandatory. Device-type bits pass through.
    public static func negotiate(offered: Features, wanted: Features) -> Features {
        offered.intersection(wanted).intersection(implementedTransport.union(.deviceType)).union(.version1)
    }

    /// The transport bits whose wire format is defined but which the queues do not run yet: none
    /// now (RING_PACKED and IN_ORDER both run). A region header may carry such a bit; a queue
    /// refuses it.
    public static let wireOnlyTransport: Features = []

    /// The transport and reserved bits of this set that the ring core does not implement.
    public var unimplementedRingBits: Features {
        subtracting(.deviceType).subtracting(.implementedTransport)
    }

    /// Checks that a queue can run with this negotiated set: VERSION_1 is present and every
    /// transport bit is one the ring core implements.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/featureNotSupported`` naming the first bit
    ///   the ring core does not implement, or VERSION_1 when it is missing.
    public func validateForRing() throws(VirtqueueError) {
        try validate(allowing: .implementedTransport)
    }

    /// Checks that a region header may carry this set: as ``validateForRing()``, but the bits of
    /// ``wireOnlyTransport``, whose wire format is defined, pass; the queues refuse what they do
    /// not run when they are built.
    func validateForLayout() throws(VirtqueueError) {
        try validate(allowing: Self.implementedTransport.union(Self.wireOnlyTransport))
    }

    /// The one rule of both checks: VERSION_1 is present and every transport or reserved bit is
    /// in `allowed`.
    private func validate(allowing allowed: Features) throws(VirtqueueError) {
        let unimplemented = subtracting(.deviceType).subtracting(allowed)
        if !unimplemented.isEmpty {
            let bit = unimplemented.rawValue.trailingZeroBitCount
            let wireOnly = Self.wireOnlyTransport.contains(Features(rawValue: 1 << UInt64(bit)))
            throw VirtqueueError(
                .featureNotSupported,
                "feature \(Features.name(ofBit: bit)) (bit \(bit)) is not implemented by the ring core"
                    + (wireOnly
                        ? " yet: its wire format is defined (docs/wire-format.md §12), but the queues run the split ring without it"
                        : "")
                    + (unimplemented.rawValue.nonzeroBitCount > 1 ? "; all unimplemented: \(unimplemented)" : "")
            )
        }
        guard contains(.version1) else {
            throw VirtqueueError(
                .featureNotSupported,
                "features \(self) lack VERSION_1 (bit 32): legacy rings are not supported"
            )
        }
    }

    static let names: [(bit: Int, name: String)] = [
        (24, "NOTIFY_ON_EMPTY"), (27, "ANY_LAYOUT"), (28, "INDIRECT_DESC"), (29, "EVENT_IDX"),
        (32, "VERSION_1"), (33, "ACCESS_PLATFORM"), (34, "RING_PACKED"), (35, "IN_ORDER"),
        (36, "ORDER_PLATFORM"), (37, "SR_IOV"), (38, "NOTIFICATION_DATA"), (39, "NOTIF_CONFIG_DATA"),
        (40, "RING_RESET"), (41, "ADMIN_VQ"),
    ]

    /// Virtio's name of feature `bit` (`RING_PACKED`), or what kind of bit it is (`device bit 6`).
    public static func name(ofBit bit: Int) -> String {
        if let entry = names.first(where: { $0.bit == bit }) { return entry.name }
        guard (0..<64).contains(bit) else { return "bit \(bit)" }
        let mask = Features(rawValue: 1 << UInt64(bit))
        let kind = transport.contains(mask) ? "transport" : reserved.contains(mask) ? "reserved" : "device"
        return "\(kind) bit \(bit)"
    }

    public var description: String {
        var names: [String] = []
        var rest = rawValue
        for (bit, name) in Self.names where rawValue & (1 << UInt64(bit)) != 0 {
            names.append(name)
            rest &= ~(1 << UInt64(bit))
        }
        while rest != 0 {
            names.append(Self.name(ofBit: rest.trailingZeroBitCount))
            rest &= rest - 1
        }
        return "[" + names.joined(separator: ", ") + "]"
    }
}
