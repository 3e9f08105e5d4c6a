import Glibc
public import SystemPackage
public import Virtqueue

/// A `MemoryRegion` mapped from a ``SharedMemoryFile``: the same bytes, at a different address,
/// in each process that maps the file.
///
/// The region owns its mapping: copies are handles to the same mapping, which is unmapped when
/// the last of them goes away, so a driver or device queue that holds a copy keeps the memory
/// mapped for its own lifetime and nothing can use it after it is gone. The file cannot shrink
/// underneath it (see ``SharedMemoryFile``), so every byte of ``count`` stays mapped.
///
/// ```swift
/// let layout = try RegionLayout(queueSizes: [256], dataAreaSize: 1 << 20, features: .all)
/// let region = try SharedMemoryRegion.create(layout: layout)
/// let fd = try region.file.duplicateFileDescriptor()   // hand this to the peer
/// var driver = try DriverQueue(region: region, notifier: notifier)
/// ```
public struct SharedMemoryRegion: MemoryRegion, @unchecked Sendable {
    @usableFromInline let base: UnsafeMutableRawPointer
    /// The number of bytes mapped: the whole file.
    public let count: Int
    /// The file the region maps; map it again, or pass it to a peer.
    public let file: SharedMemoryFile
    /// The layout this process wrote or validated once (``SharedMemoryFile/layout``); queues use
    /// it instead of reading the header from shared memory again.
    public let regionLayout: RegionLayout?
    /// Unmaps the mapping when the last copy of the region goes away.
    @usableFromInline let mapping: Mapping

    init(base: UnsafeMutableRawPointer, count: Int, file: SharedMemoryFile, regionLayout: RegionLayout?) {
        self.base = base
        self.count = count
        self.file = file
        self.regionLayout = regionLayout
        self.mapping = Mapping(base: base, count: count)
    }

    /// The mapping's owner: unmaps it in `deinit`.
    @usableFromInline
    final class Mapping: @unchecked Sendable {
        let base: UnsafeMutableRawPointer
        let count: Int

        init(base: UnsafeMutableRawPointer, count: Int) {
            self.base = base
            self.count = count
        }

        deinit {
            munmap(base, count)
        }
    }

    @inlinable
    public func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        // The pointer is the region's own copy (no indirection on the hot path); the mapping's
        // owner is kept alive until `body` returns.
        try withExtendedLifetime(mapping) { () throws(E) -> R in
            try body(UnsafeMutableRawBufferPointer(start: base, count: count))
        }
    }

    /// Creates a sealed file for `layout`, writes its header and maps it.
    ///
    /// - Throws: ``SharedMemoryError`` if a system call fails.
    public static func create(layout: RegionLayout, name: String = "virtqueue") throws(SharedMemoryError)
        -> SharedMemoryRegion
    {
        try SharedMemoryFile.create(layout: layout, name: name).map()
    }

    /// Attaches to a region file received from a peer: checks the file (regular, sealed against
    /// shrinking, not empty), maps it, and validates its header with `RegionLayout/init(reading:)`.
    ///
    /// Takes ownership of `fileDescriptor`; it is closed on failure.
    ///
    /// - Throws: ``SharedMemoryError`` with ``SharedMemoryError/Code-swift.struct/regionNotSealed``,
    ///   ``SharedMemoryError/Code-swift.struct/regionTooSmall``, or
    ///   ``SharedMemoryError/Code-swift.struct/invalidHeader`` (the core's error in
    ///   ``SharedMemoryError/virtqueueError``).
    public static func attach(_ fileDescriptor: FileDescriptor, requireSeals: Bool = true) throws(SharedMemoryError)
        -> SharedMemoryRegion
    {
        let file = try SharedMemoryFile(adopting: fileDescriptor, requireSeals: requireSeals)
        file.remember(try file.map().validatedLayout())
        return try file.map()
    }

    /// Reads and validates the region's header (from shared memory, every time).
    ///
    /// - Throws: ``SharedMemoryError/Code-swift.struct/invalidHeader``, with the core's error.
    public func validatedLayout() throws(SharedMemoryError) -> RegionLayout {
        do {
            return try RegionLayout(reading: self)
        } catch {
            throw SharedMemoryError(
                .invalidHeader,
                "the region's header is invalid: \(error.message)",
                virtqueueError: error
            )
        }
    }
}
