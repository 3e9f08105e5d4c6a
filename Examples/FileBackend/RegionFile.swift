import Glibc
public import Virtqueue

/// A regular file that holds a virtqueue region; ``map()`` it once for each end.
///
/// The file is created in `directory` and unlinked at once, so nothing is left behind; it lives
/// as long as this object and any mapping of it. Two mappings of one file with `MAP_SHARED` are
/// the same bytes at two addresses — exactly what a driver and a device in two processes see.
///
/// ```swift
/// let file = try RegionFile(byteCount: layout.regionSize)
/// let driverRegion = try file.map()
/// let deviceRegion = try file.map()   // same bytes, another address
/// ```
///
/// - Warning: Whoever holds the file descriptor can shrink the file, and touching a mapping past
///   the end of its file raises `SIGBUS`. That is fine when both ends are in this process, but a
///   region shared with a peer you do not trust must not be shrinkable: use a sealed memfd
///   (`F_SEAL_SHRINK`), as the shared-memory backend does.
public final class RegionFile: Sendable {
    /// The open file.
    public let fileDescriptor: CInt
    /// The file's size: the size of every mapping.
    public let byteCount: Int

    /// Creates a zero-filled file of `byteCount` bytes.
    ///
    /// - Parameters:
    ///   - byteCount: The region's size; at least one byte.
    ///   - directory: Where to create the file (it is unlinked at once).
    /// - Throws: ``SystemCallError`` from `mkstemp` or `ftruncate`.
    public init(byteCount: Int, directory: String = "/tmp") throws(SystemCallError) {
        guard byteCount > 0 else { throw SystemCallError("ftruncate", errno: EINVAL) }
        var path = Array("\(directory)/virtqueue-region-XXXXXX".utf8CString)
        let descriptor = mkstemp(&path)
        guard descriptor >= 0 else { throw .current("mkstemp") }
        unlink(path)
        guard ftruncate(descriptor, off_t(byteCount)) == 0 else {
            let error = SystemCallError.current("ftruncate")
            close(descriptor)
            throw error
        }
        self.fileDescriptor = descriptor
        self.byteCount = byteCount
    }

    deinit {
        close(fileDescriptor)
    }

    /// Maps the whole file, shared and read-write.
    ///
    /// - Returns: A region that unmaps itself when it goes away.
    /// - Throws: ``SystemCallError`` from `mmap`.
    public func map() throws(SystemCallError) -> FileRegion {
        let address = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, fileDescriptor, 0)
        guard let address, address != MAP_FAILED else { throw .current("mmap") }
        return FileRegion(base: address, count: byteCount)
    }
}

/// One mapping of a ``RegionFile``: a ``Virtqueue/MemoryRegion`` for one end of a queue.
///
/// The region is `~Copyable` and owns its mapping: the queue that takes it unmaps it when the
/// queue goes away, and nothing can touch the memory afterwards. Mappings are page-aligned, so
/// the 16-byte alignment the ring needs comes for free.
public struct FileRegion: MemoryRegion, ~Copyable, @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    /// The mapping's size in bytes.
    public let count: Int

    init(base: UnsafeMutableRawPointer, count: Int) {
        self.base = base
        self.count = count
    }

    deinit {
        munmap(base, count)
    }

    public func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: base, count: count))
    }
}
