import CVirtqueueSystem
import Glibc
import Synchronization
public import SystemPackage
public import Virtqueue

/// A file of shared memory that holds a region: a sealed `memfd`, or a POSIX shared-memory
/// object where `memfd_create` is missing.
///
/// The file is what crosses process boundaries (inherited by a child, or passed over a UNIX
/// socket); each process maps it with ``map()`` into a ``SharedMemoryRegion``.
///
/// A file created here is sealed once sized: `F_SEAL_SHRINK` and `F_SEAL_GROW` fix its size and
/// `F_SEAL_SEAL` forbids further seals, so a peer that calls `ftruncate` gets `EPERM` and can
/// never make a mapping of ours point past the end of the file (which would kill us with
/// SIGBUS). A file received from a peer is refused unless it carries `F_SEAL_SHRINK`.
///
/// The object owns its descriptor and closes it in `deinit`. Mappings outlive it.
public final class SharedMemoryFile: Sendable {
    /// The descriptor. Valid while this object lives; do not close it.
    public let fileDescriptor: FileDescriptor
    /// The file's size in bytes, fixed for its lifetime.
    public let byteCount: Int
    /// Whether the file is sealed against shrinking (always, except for the `shm_open` fallback).
    public let isSealed: Bool
    /// The layout this process wrote into the file (``create(layout:name:)``) or validated from it
    /// once (a handshake); regions mapped from the file carry it, so queues do not read the header
    /// again. Set once.
    let knownLayout = Mutex<RegionLayout?>(nil)

    /// The layout this process wrote into the file or validated from it once, if any.
    public var layout: RegionLayout? { knownLayout.withLock { $0 } }

    /// Records the layout read and validated from the file, once: later regions carry it.
    func remember(_ layout: RegionLayout) {
        knownLayout.withLock { known in
            if known == nil { known = layout }
        }
    }

    init(owning fileDescriptor: FileDescriptor, byteCount: Int, isSealed: Bool) {
        self.fileDescriptor = fileDescriptor
        self.byteCount = byteCount
        self.isSealed = isSealed
    }

    deinit {
        closeDescriptor(fileDescriptor.rawValue)
    }

    /// How to make the file; tests force the fallback.
    @_spi(Testing)
    public enum Kind: Sendable {
        /// `memfd_create` with sealing, or `shm_open` if the kernel lacks it.
        case automatic
        /// `shm_open`, unlinked at once: no seals.
        case sharedMemoryObject
    }

    /// Creates a sealed file of `byteCount` zero bytes.
    ///
    /// Calls `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`, `ftruncate`, then adds
    /// `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`. Where the kernel has no `memfd_create`, falls
    /// back to `shm_open` (unlinked at once), which cannot be sealed.
    ///
    /// - Parameters:
    ///   - byteCount: The file's size; positive.
    ///   - name: A name for debugging (it shows in `/proc/PID/fd` as `memfd:NAME`).
    /// - Throws: ``SharedMemoryError`` if the size is not positive or a system call fails.
    public static func create(byteCount: Int, name: String = "virtqueue") throws(SharedMemoryError) -> SharedMemoryFile
    {
        try create(byteCount: byteCount, name: name, kind: .automatic)
    }

    /// Creates a file of `byteCount` bytes of the given kind.
    @_spi(Testing)
    public static func create(byteCount: Int, name: String, kind: Kind) throws(SharedMemoryError) -> SharedMemoryFile {
        guard byteCount > 0 else {
            throw SharedMemoryError(.invalidArgument, "region size \(byteCount) is not positive")
        }
        if kind == .automatic {
            let fd = vq_memfd_create(name, VQ_MFD_CLOEXEC | VQ_MFD_ALLOW_SEALING)
            if fd >= 0 {
                do throws(SharedMemoryError) {
                    try retrying("ftruncate") { ftruncate(fd, off_t(byteCount)) }
                    try retrying("fcntl(F_ADD_SEALS)") {
                        vq_add_seals(fd, VQ_SEAL_SHRINK | VQ_SEAL_GROW | VQ_SEAL_SEAL)
                    }
                } catch {
                    closeDescriptor(fd)
                    throw error
                }
                return SharedMemoryFile(owning: FileDescriptor(rawValue: fd), byteCount: byteCount, isSealed: true)
            }
            let error = Errno.current
            guard error == .noFunction || error == .notSupported else { throw .system("memfd_create", error) }
        }
        return try createSharedMemoryObject(byteCount: byteCount, name: name)
    }

    static let objectCounter = Atomic<Int>(0)

    static func createSharedMemoryObject(byteCount: Int, name: String) throws(SharedMemoryError) -> SharedMemoryFile {
        let unique = objectCounter.add(1, ordering: .relaxed).newValue
        let path = "/\(name)-\(getpid())-\(unique)"
        let fd = try retrying("shm_open") { shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
        _ = shm_unlink(path)
        do throws(SharedMemoryError) {
            try retrying("ftruncate") { ftruncate(fd, off_t(byteCount)) }
        } catch {
            closeDescriptor(fd)
            throw error
        }
        return SharedMemoryFile(owning: FileDescriptor(rawValue: fd), byteCount: byteCount, isSealed: false)
    }

    /// Creates a sealed file for `layout` and writes the layout's header into it
    /// (`RegionLayout/initialize(_:)`), ready for a driver and a device to attach.
    ///
    /// - Throws: ``SharedMemoryError`` if a system call fails.
    public static func create(layout: RegionLayout, name: String = "virtqueue") throws(SharedMemoryError)
        -> SharedMemoryFile
    {
        let file = try create(byteCount: layout.regionSize, name: name)
        let region = try file.map()
        do {
            try layout.initialize(region)
        } catch {
            throw SharedMemoryError(
                .invalidArgument,
                "the layout does not fit its file: \(error.message)",
                virtqueueError: error
            )
        }
        file.remember(layout)
        return file
    }

    /// Takes ownership of a descriptor received from a peer (or inherited) and checks that it is
    /// safe to map: a regular, non-empty file that the peer cannot shrink.
    ///
    /// On failure the descriptor is closed.
    ///
    /// - Parameters:
    ///   - fileDescriptor: The descriptor; this object owns it from now on.
    ///   - requireSeals: Refuse a file without `F_SEAL_SHRINK`. Turn off only for a file from a
    ///     trusted creator that could not seal it (the `shm_open` fallback).
    /// - Throws: ``SharedMemoryError`` with ``SharedMemoryError/Code-swift.struct/regionNotSealed``
    ///   or ``SharedMemoryError/Code-swift.struct/regionTooSmall``, or a system call's failure.
    public init(adopting fileDescriptor: FileDescriptor, requireSeals: Bool = true) throws(SharedMemoryError) {
        let fd = fileDescriptor.rawValue
        do throws(SharedMemoryError) {
            var isRegular: CInt = 0
            var size: Int64 = 0
            try retrying("fstat") { vq_file_info(fd, &isRegular, &size) }
            guard isRegular != 0 else {
                throw SharedMemoryError(.regionNotSealed, "descriptor \(fd) is not a regular file")
            }
            let seals = vq_get_seals(fd)
            let sealed = seals >= 0 && seals & VQ_SEAL_SHRINK != 0
            if requireSeals && !sealed {
                throw SharedMemoryError(
                    .regionNotSealed,
                    seals < 0
                        ? "descriptor \(fd) cannot be sealed (not a memfd), so its peer could shrink it"
                        : "descriptor \(fd) has seals 0x\(String(seals, radix: 16)) without F_SEAL_SHRINK"
                )
            }
            guard size > 0, size <= Int64(Int.max) else {
                throw SharedMemoryError(.regionTooSmall, "the region file of descriptor \(fd) has \(size) bytes")
            }
            self.fileDescriptor = fileDescriptor
            self.byteCount = Int(size)
            self.isSealed = sealed
        } catch {
            closeDescriptor(fd)
            throw error
        }
    }

    /// Maps the whole file, shared, readable and writable.
    ///
    /// The mapping does not validate the header. The region carries the layout this process wrote
    /// or validated once (``layout``), if any; otherwise queues read the header when they attach
    /// (see ``SharedMemoryRegion/attach(_:requireSeals:)`` for a validating shortcut).
    ///
    /// - Throws: ``SharedMemoryError`` if `mmap` fails.
    public func map() throws(SharedMemoryError) -> SharedMemoryRegion {
        guard let base = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, fileDescriptor.rawValue, 0),
            base != UnsafeMutableRawPointer(bitPattern: -1)
        else {
            throw .system("mmap of \(byteCount) bytes")
        }
        return SharedMemoryRegion(base: base, count: byteCount, file: self, regionLayout: layout)
    }

    /// A new descriptor for the same file, close-on-exec, that the caller owns.
    ///
    /// - Throws: ``SharedMemoryError`` if `fcntl(F_DUPFD_CLOEXEC)` fails.
    public func duplicateFileDescriptor() throws(SharedMemoryError) -> FileDescriptor {
        FileDescriptor(rawValue: try retrying("fcntl(F_DUPFD_CLOEXEC)") { vq_dup_cloexec(fileDescriptor.rawValue, 0) })
    }
}
