/// A contiguous span of memory addressed by offset: this package's own regions, and the
/// one-mapping ``GuestMemory``.
///
/// A region is guest memory of a single mapping at bus address 0, so a descriptor's address is
/// an offset into the region. Each side of a queue may see the bytes at a different address —
/// one allocation shared by two threads, or one file mapped by two processes — which is why the
/// ring stores offsets, never pointers. A conforming type owns its mapping (unmapping in `deinit`,
/// say) and needs only two things:
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
/// A backend must guarantee that the whole `count` bytes stay mapped, readable and writable, at
/// the same address for the region's lifetime — for a file, that the peer cannot shrink it — and
/// that the first byte is 16-byte aligned (page-aligned mappings and
/// `allocate(byteCount:alignment:)` are).
public protocol MemoryRegion: GuestMemory, ~Copyable {
    /// The number of bytes in the region.
    var count: Int { get }

    /// Calls `body` with the region's bytes.
    ///
    /// - Warning: The buffer pointer is valid only inside `body`. Do not let it escape.
    func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R
}

extension MemoryRegion where Self: ~Copyable {
    /// The region as one mapping at bus address 0.
    public func withMappings<R, E: Error>(
        _ body: (UnsafeBufferPointer<GuestMapping>) throws(E) -> R
    ) throws(E) -> R {
        try withUnsafeMutableBytes { (bytes) throws(E) -> R in
            var mapping = GuestMapping(busAddress: 0, bytes: bytes)
            return try withUnsafePointer(to: &mapping) { (pointer) throws(E) -> R in
                try body(UnsafeBufferPointer(start: pointer, count: 1))
            }
        }
    }
}
