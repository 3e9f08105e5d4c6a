/// A span of memory that holds virtqueues and the buffers they carry.
///
/// `MemoryRegion` is one half of the seam between the ring core and a backend (the other is
/// ``Notifier``). The core never allocates, maps or unmaps memory: a backend hands it a region,
/// and the core reads and writes ring structures inside it. Both sides of a queue see the same
/// bytes — one allocation shared by two threads, or one file mapped by two processes — but each
/// side may see them at a different address, which is why the ring stores offsets, never pointers.
///
/// A conforming type owns its mapping (unmapping in `deinit`, say) and needs only two things:
///
/// ```swift
/// struct FileRegion: MemoryRegion, ~Copyable {
///     var count: Int { mapping.count }
///     func withUnsafeMutableBytes<R, E: Error>(
///         _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
///     ) throws(E) -> R {
///         try body(mapping)
///     }
/// }
/// ```
///
/// The bytes are shared with a peer that may be hostile and may change them at any moment. The
/// core treats every value it reads as untrusted (see `docs/trust-model.md`); a backend must only
/// guarantee that the whole `count` bytes stay mapped and readable and writable for the region's
/// lifetime — for a file, that the peer cannot shrink it underneath us — and that the first
/// byte is 16-byte aligned (page-aligned mappings and `allocate(byteCount:alignment:)` are).
public protocol MemoryRegion: ~Copyable {
    /// The number of bytes in the region.
    var count: Int { get }

    /// Calls `body` with the region's bytes.
    ///
    /// - Warning: The buffer pointer is valid only inside `body`. Do not let it escape.
    func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R
}
