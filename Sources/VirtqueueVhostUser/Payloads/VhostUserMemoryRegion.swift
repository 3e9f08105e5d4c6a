/// A memory region description, `{u64 guest_phys, u64 size, u64 user_addr, u64 mmap_offset}`
/// (32 bytes): an entry of SET_MEM_TABLE, and (after 8 bytes of padding) the payload of
/// ADD_MEM_REG and REM_MEM_REG.
public struct VhostUserMemoryRegion: Hashable, Sendable {
    /// The description's size on the wire.
    public static let size = 32

    /// The guest-physical address of the region's first byte.
    public var guestPhysicalAddress: UInt64
    /// The region's size in bytes.
    public var size: UInt64
    /// The front-end's virtual address of the region's first byte (what ring addresses refer to).
    public var userAddress: UInt64
    /// Where the region starts in its file descriptor.
    public var mmapOffset: UInt64

    /// A region description.
    public init(guestPhysicalAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestPhysicalAddress = guestPhysicalAddress
        self.size = size
        self.userAddress = userAddress
        self.mmapOffset = mmapOffset
    }

    /// The guest-physical range, last byte included (valid once the region passed validation).
    public var guestPhysicalRange: ClosedRange<UInt64> {
        guestPhysicalAddress...(guestPhysicalAddress &+ (size &- 1))
    }

    /// The user-address range, last byte included (valid once the region passed validation).
    public var userRange: ClosedRange<UInt64> {
        userAddress...(userAddress &+ (size &- 1))
    }

    func encode(into writer: inout ByteWriter) {
        writer.append(guestPhysicalAddress)
        writer.append(size)
        writer.append(userAddress)
        writer.append(mmapOffset)
    }

    static func decode(_ reader: inout ByteReader) -> VhostUserMemoryRegion {
        VhostUserMemoryRegion(
            guestPhysicalAddress: reader.u64(),
            size: reader.u64(),
            userAddress: reader.u64(),
            mmapOffset: reader.u64()
        )
    }

    /// Checks one region on its own: a size above 0; the last guest-physical and user byte
    /// (`address + size - 1`) below 2^64; unless `checkingMmapOffset` is false (REM_MEM_REG
    /// ignores the offset), `mmap_offset + size` at most 2^63 - 1 (an `off_t`).
    func validate(_ context: String, checkingMmapOffset: Bool = true) throws(VhostUserError) {
        guard size > 0 else {
            throw VhostUserError(
                .invalidRegion,
                "\(context): region at guest-physical \(hex(guestPhysicalAddress)) has size 0"
            )
        }
        guard !guestPhysicalAddress.addingReportingOverflow(size - 1).overflow else {
            throw VhostUserError(
                .invalidRegion,
                "\(context): guest-physical \(hex(guestPhysicalAddress)) + size \(hex(size)) overflows 2^64"
            )
        }
        guard !userAddress.addingReportingOverflow(size - 1).overflow else {
            throw VhostUserError(
                .invalidRegion,
                "\(context): user address \(hex(userAddress)) + size \(hex(size)) overflows 2^64"
            )
        }
        if checkingMmapOffset {
            let end = mmapOffset.addingReportingOverflow(size)
            guard !end.overflow, end.partialValue <= UInt64(Int64.max) else {
                throw VhostUserError(
                    .invalidRegion,
                    "\(context): mmap offset \(hex(mmapOffset)) + size \(hex(size)) is past 2^63 - 1"
                )
            }
        }
    }
}

/// `0x…` for a log message.
func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
