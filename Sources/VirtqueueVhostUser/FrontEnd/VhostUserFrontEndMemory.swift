import CVirtqueueSystem
import Glibc
public import SystemPackage
public import Virtqueue

/// Guest memory a vhost-user front-end creates and shares: one sealed memfd per region, mapped in
/// this process, each at the guest-physical (bus) address the front-end chose.
///
/// The regions' files are sealed against growing and shrinking, so a back-end cannot make our
/// mappings fault. A region's *user address* — what SET_MEM_TABLE and SET_VRING_ADDR carry — is
/// where this process mapped it.
///
/// ```swift
/// let memory = try VhostUserFrontEndMemory(regions: [
///     .init(guestPhysicalAddress: 0, size: 1 << 20),
/// ])
/// try frontEnd.setMemoryTable(memory)
/// ```
public final class VhostUserFrontEndMemory: GuestMemory, @unchecked Sendable {
    /// Where a region lies: its guest-physical address, its size, and the offset in its file.
    public struct Layout: Hashable, Sendable {
        public var guestPhysicalAddress: UInt64
        public var size: Int
        public var mmapOffset: UInt64

        /// A region of `size` bytes at `guestPhysicalAddress`, at `mmapOffset` in its file.
        public init(guestPhysicalAddress: UInt64, size: Int, mmapOffset: UInt64 = 0) {
            self.guestPhysicalAddress = guestPhysicalAddress
            self.size = size
            self.mmapOffset = mmapOffset
        }
    }

    /// One mapped region.
    public struct Region: Sendable {
        /// Where it lies.
        public let layout: Layout
        /// Its memfd (the memory keeps it open).
        public let fileDescriptor: FileDescriptor
        /// Its bytes, in this process.
        public nonisolated(unsafe) let bytes: UnsafeMutableRawBufferPointer
        nonisolated(unsafe) let base: UnsafeMutableRawPointer
        let mappedLength: Int
    }

    /// The regions, in the order given.
    public let regions: [Region]
    let mappings: [GuestMapping]

    /// Creates and maps the regions.
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidArgument`` for an empty or overlapping
    ///   layout; ``VhostUserError/Code-swift.struct/systemCallFailed`` if a memfd cannot be made,
    ///   sized, sealed or mapped.
    public init(regions layout: [Layout]) throws(VhostUserError) {
        guard !layout.isEmpty, layout.count <= VhostUserLimits.maxMemoryRegions else {
            throw VhostUserError(
                .invalidArgument,
                "\(layout.count) regions is not in 1...\(VhostUserLimits.maxMemoryRegions)"
            )
        }
        let sorted = layout.sorted { $0.guestPhysicalAddress < $1.guestPhysicalAddress }
        for (low, high) in zip(sorted, sorted.dropFirst()) {
            let end = low.guestPhysicalAddress.addingReportingOverflow(UInt64(max(low.size, 0)))
            guard !end.overflow, end.partialValue <= high.guestPhysicalAddress else {
                throw VhostUserError(
                    .invalidArgument,
                    "regions at \(hex(low.guestPhysicalAddress)) and \(hex(high.guestPhysicalAddress)) overlap"
                )
            }
        }
        var made: [Region] = []
        do throws(VhostUserError) {
            for entry in layout {
                made.append(try Self.map(entry))
            }
        } catch {
            for region in made { Self.unmap(region) }
            throw error
        }
        regions = made
        mappings = made.map { GuestMapping(busAddress: $0.layout.guestPhysicalAddress, bytes: $0.bytes) }
    }

    static func map(_ entry: Layout) throws(VhostUserError) -> Region {
        guard entry.size > 0 else { throw VhostUserError(.invalidArgument, "a region of size \(entry.size)") }
        let fd = vq_memfd_create("vhost-user-guest", VQ_MFD_CLOEXEC | VQ_MFD_ALLOW_SEALING)
        guard fd >= 0 else { throw .system("memfd_create", Errno(rawValue: errno)) }
        let pageSize = UInt64(max(sysconf(CInt(_SC_PAGESIZE)), 4096))
        let slack = entry.mmapOffset % pageSize
        guard ftruncate(fd, off_t(entry.mmapOffset) + off_t(entry.size)) == 0,
            vq_add_seals(fd, VQ_SEAL_SHRINK | VQ_SEAL_GROW | VQ_SEAL_SEAL) == 0
        else {
            let error = Errno(rawValue: errno)
            _ = Glibc.close(fd)
            throw .system("sizing and sealing a guest memory memfd", error)
        }
        let length = entry.size + Int(slack)
        let pointer = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(entry.mmapOffset - slack))
        guard let pointer, Int(bitPattern: pointer) != -1 else {
            let error = Errno(rawValue: errno)
            _ = Glibc.close(fd)
            throw .system("mmap of a guest memory region", error)
        }
        return Region(
            layout: entry,
            fileDescriptor: FileDescriptor(rawValue: fd),
            bytes: UnsafeMutableRawBufferPointer(start: pointer + Int(slack), count: entry.size),
            base: pointer,
            mappedLength: length
        )
    }

    static func unmap(_ region: Region) {
        _ = munmap(region.base, region.mappedLength)
        _ = Glibc.close(region.fileDescriptor.rawValue)
    }

    deinit {
        for region in regions { Self.unmap(region) }
    }

    public func withMappings<R, E: Error>(_ body: (UnsafeBufferPointer<GuestMapping>) throws(E) -> R) throws(E) -> R {
        try mappings.withUnsafeBufferPointer { (buffer) throws(E) -> R in try body(buffer) }
    }

    /// Region `index` as SET_MEM_TABLE describes it: the user address is this process's.
    public func description(_ index: Int) -> VhostUserMemoryRegion {
        let region = regions[index]
        return VhostUserMemoryRegion(
            guestPhysicalAddress: region.layout.guestPhysicalAddress,
            size: UInt64(region.layout.size),
            userAddress: UInt64(UInt(bitPattern: region.bytes.baseAddress)),
            mmapOffset: region.layout.mmapOffset
        )
    }

    /// The SET_MEM_TABLE payload of every region (the descriptors borrowed: the memory keeps them).
    public var table: VhostUserMemoryTable {
        VhostUserMemoryTable(
            regions: regions.indices.map(description),
            fileDescriptors: regions.map { VhostUserFileDescriptor(borrowing: $0.fileDescriptor) }
        )
    }

    /// The user address of guest-physical `address`, or `nil` if no region holds it.
    public func userAddress(of address: UInt64) -> UInt64? {
        for region in regions where address >= region.layout.guestPhysicalAddress {
            let offset = address - region.layout.guestPhysicalAddress
            if offset < UInt64(region.layout.size) {
                return UInt64(UInt(bitPattern: region.bytes.baseAddress)) + offset
            }
        }
        return nil
    }
}
