/// A memory regions description (SET_MEM_TABLE): `{u32 nregions, u32 padding, region[nregions]}`,
/// with one file descriptor per region, in the same order.
public struct VhostUserMemoryTable: Sendable {
    /// The regions. A decoded table has 1…``VhostUserLimits/maxMemoryRegions`` of them, each
    /// valid on its own and none overlapping another in guest-physical or user address space.
    public var regions: [VhostUserMemoryRegion]
    /// The regions' file descriptors: `fileDescriptors[i]` backs `regions[i]`.
    public var fileDescriptors: [VhostUserFileDescriptor]

    /// A memory table; `regions` and `fileDescriptors` have the same count.
    public init(regions: [VhostUserMemoryRegion], fileDescriptors: [VhostUserFileDescriptor]) {
        self.regions = regions
        self.fileDescriptors = fileDescriptors
    }

    func encode(into writer: inout ByteWriter) {
        writer.append(UInt32(truncatingIfNeeded: regions.count))
        writer.append(UInt32(0))
        for region in regions { region.encode(into: &writer) }
    }

    /// Checks that no two regions overlap in guest-physical or in user address space (each region
    /// was validated on its own first, so its ranges do not wrap).
    static func checkOverlaps(_ regions: [VhostUserMemoryRegion], _ context: String) throws(VhostUserError) {
        for first in regions.indices {
            for second in regions.indices where second > first {
                let a = regions[first]
                let b = regions[second]
                if a.guestPhysicalRange.overlaps(b.guestPhysicalRange) {
                    throw VhostUserError(
                        .overlappingRegions,
                        "\(context): regions \(first) and \(second) overlap in guest-physical space "
                            + "(\(hex(a.guestPhysicalAddress)) size \(hex(a.size)), "
                            + "\(hex(b.guestPhysicalAddress)) size \(hex(b.size)))"
                    )
                }
                if a.userRange.overlaps(b.userRange) {
                    throw VhostUserError(
                        .overlappingRegions,
                        "\(context): regions \(first) and \(second) overlap in user address space "
                            + "(\(hex(a.userAddress)) size \(hex(a.size)), \(hex(b.userAddress)) size \(hex(b.size)))"
                    )
                }
            }
        }
    }
}
