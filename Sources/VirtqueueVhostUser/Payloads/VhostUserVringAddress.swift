/// A vring address description (`struct vhost_vring_addr`, 40 bytes): the payload of SET_VRING_ADDR.
///
/// The three ring addresses are user addresses (the front-end's virtual addresses, translated
/// through the memory table's user ranges), or IOVAs when VIRTIO_F_IOMMU_PLATFORM is negotiated.
public struct VhostUserVringAddress: Hashable, Sendable {
    /// The payload's size on the wire.
    public static let size = 40

    /// `VHOST_VRING_F_LOG` (bit 0 of ``flags``): log writes to the used ring.
    public static let logFlag: UInt32 = 0x1

    /// The queue index.
    public var index: UInt32
    /// The flags; only ``logFlag`` is defined.
    public var flags: UInt32
    /// The descriptor table's user address.
    public var descriptor: UInt64
    /// The used ring's user address.
    public var used: UInt64
    /// The available ring's user address.
    public var available: UInt64
    /// The guest-physical address used to log writes to the used ring.
    public var log: UInt64

    /// A vring address description.
    public init(index: UInt32, flags: UInt32 = 0, descriptor: UInt64, used: UInt64, available: UInt64, log: UInt64 = 0)
    {
        self.index = index
        self.flags = flags
        self.descriptor = descriptor
        self.used = used
        self.available = available
        self.log = log
    }

    func encode(into writer: inout ByteWriter) {
        writer.append(index)
        writer.append(flags)
        writer.append(descriptor)
        writer.append(used)
        writer.append(available)
        writer.append(log)
    }

    static func decode(_ reader: inout ByteReader) -> VhostUserVringAddress {
        VhostUserVringAddress(
            index: reader.u32(),
            flags: reader.u32(),
            descriptor: reader.u64(),
            used: reader.u64(),
            available: reader.u64(),
            log: reader.u64()
        )
    }
}
