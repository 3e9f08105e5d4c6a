import CVirtqueueSystem
import Glibc
import SystemPackage
public import Virtqueue

/// A virtual machine's guest memory as a vhost-user front-end hands it over: one mapping per
/// memory region, at the region's guest-physical address, shared by every queue of the device.
///
/// Built from SET_MEM_TABLE (``init(table:)``) and changed by ADD_MEM_REG / REM_MEM_REG
/// (``adding(_:fileDescriptor:)``, ``removing(_:)``), which return a new memory and leave this one
/// as it is: a ``GuestMemory`` never changes while a queue uses it. Regions are mapped once and
/// shared between the memories that hold them; each is unmapped when the last memory holding it
/// goes away (after the last queue built on it).
///
/// Every region is peer input. Before mapping one, the memory checks with `fstat(2)` that its
/// descriptor is a regular file and that `mmap_offset + size` lies inside it — a mapping past the
/// end of a file would fault (`SIGBUS`) on first touch. It maps the region `MAP_SHARED`, readable
/// and writable, from the page boundary below `mmap_offset` (mmap needs a page-aligned offset),
/// and exposes exactly the region's bytes.
///
/// Ring addresses arrive as the front-end's *user* (virtual) addresses (SET_VRING_ADDR);
/// ``guestPhysicalAddress(ofUserAddress:count:what:)`` translates them through the regions' user
/// ranges.
public final class VhostUserMemory: GuestMemory, Sendable {
    /// The regions, in the order they were added.
    let mapped: [MappedRegion]
    let mappings: [GuestMapping]

    init(mapped: [MappedRegion]) {
        self.mapped = mapped
        self.mappings = mapped.map { GuestMapping(busAddress: $0.region.guestPhysicalAddress, bytes: $0.bytes) }
    }

    /// Maps every region of a SET_MEM_TABLE (the table's decoder already checked the region
    /// count, each region's ranges, and that no two overlap).
    ///
    /// The descriptors are not kept: once mapped, a region needs none. They close when the table
    /// is dropped.
    ///
    /// - Throws: ``VhostUserError`` naming the region: ``VhostUserError/Code-swift.struct/regionBeyondFile``,
    ///   ``VhostUserError/Code-swift.struct/invalidRegion`` (a size of 0, a range past 2^64, a
    ///   size that does not fit this process), ``VhostUserError/Code-swift.struct/overlappingRegions``, or
    ///   ``VhostUserError/Code-swift.struct/systemCallFailed`` if `fstat` or `mmap` fails. Regions
    ///   mapped before the failure are unmapped.
    public convenience init(table: VhostUserMemoryTable) throws(VhostUserError) {
        guard table.regions.count == table.fileDescriptors.count else {
            throw VhostUserError(
                .fileDescriptorCount,
                "SET_MEM_TABLE: \(table.regions.count) regions came with \(table.fileDescriptors.count) descriptors"
            )
        }
        // The decoder checked these; a table built by hand is checked here too.
        for (index, region) in table.regions.enumerated() { try region.validate("SET_MEM_TABLE region \(index)") }
        try VhostUserMemoryTable.checkOverlaps(table.regions, "SET_MEM_TABLE")
        var mapped: [MappedRegion] = []
        for (index, region) in table.regions.enumerated() {
            mapped.append(
                try MappedRegion(region, table.fileDescriptors[index], context: "SET_MEM_TABLE region \(index)")
            )
        }
        self.init(mapped: mapped)
    }

    /// The memory with no regions.
    public static func empty() -> VhostUserMemory { VhostUserMemory(mapped: []) }

    /// The region descriptions, in the order they were added.
    public var regions: [VhostUserMemoryRegion] { mapped.map(\.region) }

    /// Whether every region's file is sealed against shrinking (`F_SEAL_SHRINK`): only then can the
    /// front-end not make a mapped page vanish (and a later access fault). QEMU's
    /// `memory-backend-memfd` seals by default.
    public var isSealedAgainstShrinking: Bool { mapped.allSatisfy(\.sealedAgainstShrinking) }

    public func withMappings<R, E: Error>(_ body: (UnsafeBufferPointer<GuestMapping>) throws(E) -> R) throws(E) -> R {
        try mappings.withUnsafeBufferPointer { (buffer) throws(E) -> R in try body(buffer) }
    }

    /// A memory with one more region (ADD_MEM_REG), mapped now; this memory is unchanged.
    ///
    /// - Parameters:
    ///   - region: The region (its ranges already validated by the message layer).
    ///   - fileDescriptor: Its descriptor; not kept once mapped.
    /// - Throws: ``VhostUserError``: ``VhostUserError/Code-swift.struct/overlappingRegions`` naming
    ///   the region it overlaps, or what mapping it throws (see ``init(table:)``).
    public func adding(
        _ region: VhostUserMemoryRegion,
        fileDescriptor: VhostUserFileDescriptor
    ) throws(VhostUserError) -> VhostUserMemory {
        try region.validate("ADD_MEM_REG")
        try VhostUserMemoryTable.checkOverlaps(regions + [region], "ADD_MEM_REG")
        let new = try MappedRegion(region, fileDescriptor, context: "ADD_MEM_REG")
        return VhostUserMemory(mapped: mapped + [new])
    }

    /// A memory without the region matching `region`'s guest-physical address, size and user
    /// address (REM_MEM_REG; the offset is ignored, as the specification says).
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidValue`` if no region matches.
    public func removing(_ region: VhostUserMemoryRegion) throws(VhostUserError) -> VhostUserMemory {
        let matches: (MappedRegion) -> Bool = {
            $0.region.guestPhysicalAddress == region.guestPhysicalAddress && $0.region.size == region.size
                && $0.region.userAddress == region.userAddress
        }
        guard mapped.contains(where: matches) else {
            throw VhostUserError(
                .invalidValue,
                "REM_MEM_REG: no region at guest-physical \(hex(region.guestPhysicalAddress)) of size "
                    + "\(hex(region.size)) and user address \(hex(region.userAddress))"
            )
        }
        return VhostUserMemory(mapped: mapped.filter { !matches($0) })
    }

    /// Translates a front-end user address (a ring address of SET_VRING_ADDR) to the
    /// guest-physical address of the same byte: `count` bytes from `address` must lie inside one
    /// region's user range.
    ///
    /// - Parameters:
    ///   - address: The user address.
    ///   - count: How many bytes from it must be inside the region (at least 1).
    ///   - what: What the address is, for the error (`queue 0 descriptor table`).
    /// - Throws: ``VhostUserError/Code-swift.struct/unmappedRingAddress`` naming the address.
    public func guestPhysicalAddress(
        ofUserAddress address: UInt64,
        count: Int,
        what: String
    ) throws(VhostUserError) -> UInt64 {
        let length = UInt64(max(count, 1))
        for entry in mapped {
            let region = entry.region
            guard address >= region.userAddress else { continue }
            let offset = address - region.userAddress
            guard offset < region.size, length <= region.size - offset else { continue }
            return region.guestPhysicalAddress &+ offset
        }
        let inside = mapped.first {
            address >= $0.region.userAddress && address - $0.region.userAddress < $0.region.size
        }
        if let inside {
            throw VhostUserError(
                .unmappedRingAddress,
                "\(what) at user address \(hex(address)) (\(length) bytes) runs past the end of the region at user "
                    + "address \(hex(inside.region.userAddress)) of size \(hex(inside.region.size))"
            )
        }
        throw VhostUserError(
            .unmappedRingAddress,
            "\(what) at user address \(hex(address)) is outside every memory region's user range"
                + (mapped.isEmpty ? " (there are no regions)" : "")
        )
    }
}

/// One region, mapped; unmapped when the last memory holding it goes away.
final class MappedRegion: @unchecked Sendable {
    let region: VhostUserMemoryRegion
    /// The start of the mapping (the page boundary at or below the region's first byte).
    private let base: UnsafeMutableRawPointer
    private let mappedLength: Int
    /// The region's bytes, inside the mapping.
    let bytes: UnsafeMutableRawBufferPointer
    let sealedAgainstShrinking: Bool

    init(_ region: VhostUserMemoryRegion, _ descriptor: VhostUserFileDescriptor, context: String) throws(VhostUserError)
    {
        guard let fd = descriptor.fileDescriptor?.rawValue else {
            throw VhostUserError(.invalidArgument, "\(context): the region's descriptor is not open")
        }
        var isRegular: CInt = 0
        var fileSize: Int64 = 0
        guard vq_file_info(fd, &isRegular, &fileSize) == 0 else {
            throw .system("\(context): fstat", Errno(rawValue: errno))
        }
        guard isRegular != 0 else {
            throw VhostUserError(
                .regionBeyondFile,
                "\(context): the descriptor of the region at guest-physical \(hex(region.guestPhysicalAddress)) "
                    + "is not a regular file"
            )
        }
        // The message layer checked mmap_offset + size ≤ 2^63 - 1, so the sum does not overflow.
        let end = region.mmapOffset.addingReportingOverflow(region.size)
        guard !end.overflow, fileSize >= 0, end.partialValue <= UInt64(fileSize) else {
            throw VhostUserError(
                .regionBeyondFile,
                "\(context): region at guest-physical \(hex(region.guestPhysicalAddress)): mmap offset "
                    + "\(hex(region.mmapOffset)) + size \(hex(region.size)) is past the end of its file "
                    + "(\(fileSize) bytes)"
            )
        }
        let pageSize = UInt64(max(sysconf(CInt(_SC_PAGESIZE)), 4096))
        let slack = region.mmapOffset % pageSize
        let total = region.size.addingReportingOverflow(slack)
        guard !total.overflow, total.partialValue <= UInt64(Int.max), region.size <= UInt64(Int.max) else {
            throw VhostUserError(
                .invalidRegion,
                "\(context): region at guest-physical \(hex(region.guestPhysicalAddress)) of size \(hex(region.size)) "
                    + "does not fit this process"
            )
        }
        let mapping = mmap(
            nil,
            Int(total.partialValue),
            PROT_READ | PROT_WRITE,
            MAP_SHARED,
            fd,
            off_t(region.mmapOffset - slack)
        )
        guard let mapping, Int(bitPattern: mapping) != -1 else {
            throw .system(
                "\(context): mmap of \(hex(region.size)) bytes at offset \(hex(region.mmapOffset))",
                Errno(rawValue: errno)
            )
        }
        let seals = vq_get_seals(fd)
        self.region = region
        self.base = mapping
        self.mappedLength = Int(total.partialValue)
        self.bytes = UnsafeMutableRawBufferPointer(start: mapping + Int(slack), count: Int(region.size))
        self.sealedAgainstShrinking = seals >= 0 && seals & VQ_SEAL_SHRINK != 0
    }

    deinit {
        _ = munmap(base, mappedLength)
    }
}
