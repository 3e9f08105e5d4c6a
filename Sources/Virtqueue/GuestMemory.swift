/// Memory that holds virtqueues and the buffers they carry: one or more mappings, each a range
/// of bus addresses backed by bytes this process has mapped.
///
/// `GuestMemory` is one half of the seam between the ring core and a backend (the other is
/// ``Notifier``). A ring's descriptors carry *bus addresses*, never pointers: offsets into the
/// region for this package's own regions (a ``MemoryRegion``, one mapping at bus address 0), or
/// guest-physical addresses under vhost-user, where a virtual machine's memory arrives as several
/// file descriptors, each mapped at its own guest-physical range. The core translates and
/// bounds-checks every address through the mappings; it never allocates, maps or unmaps.
///
/// A conforming type needs only one thing:
///
/// ```swift
/// final class VMMemory: GuestMemory {
///     let mappings: [GuestMapping]   // mmap-ed in init, munmap-ed in deinit
///     func withMappings<R, E: Error>(
///         _ body: (UnsafeBufferPointer<GuestMapping>) throws(E) -> R
///     ) throws(E) -> R {
///         try mappings.withUnsafeBufferPointer { (buffer) throws(E) in try body(buffer) }
///     }
/// }
/// ```
///
/// **Ownership.** The memory owns its mappings: whoever unmaps them does it when the value ends
/// (`deinit` of a class or a `~Copyable` struct). A queue built on a memory consumes it (or, for a
/// class, holds a reference), so the bytes outlive every queue that reads them. The queues read
/// the mappings once, when they are built, and keep the translation in private memory.
///
/// **What a conformer guarantees.**
/// - The mappings do not overlap in bus addresses, none is empty, and none runs past 2^64.
/// - They stay the same — same bus ranges, same bytes, at the same addresses in this process,
///   mapped readable and writable — for the memory's whole lifetime. To change the memory table
///   (vhost-user's `SET_MEM_TABLE`), stop the queues (``DeviceQueue/stop()``), make a new memory
///   and resume new queues from the cursors.
/// - For a file, that the peer cannot shrink it underneath us (seals).
///
/// The bytes are shared with a peer that may be hostile and may change them at any moment; the
/// core treats every value it reads as untrusted (`docs/trust-model.md`).
public protocol GuestMemory: ~Copyable {
    /// Calls `body` with the memory's mappings, in any order.
    ///
    /// - Warning: The pointers are valid only inside `body`; only the queue that owns the memory
    ///   keeps them.
    func withMappings<R, E: Error>(_ body: (UnsafeBufferPointer<GuestMapping>) throws(E) -> R) throws(E) -> R

    /// For memory that holds one of this package's regions: the layout this process wrote into
    /// its header, or read and validated from it once (at a handshake, say). Queues built with
    /// `init(region:…)` use it rather than read the header from shared memory again, where a
    /// peer could have rewritten it since. `nil` (the default): they read the header.
    var regionLayout: RegionLayout? { get }
}

extension GuestMemory where Self: ~Copyable {
    /// No layout is known: queues read the header.
    public var regionLayout: RegionLayout? { nil }
}

/// One mapping of a ``GuestMemory``: bus addresses `busAddress ..< busAddress + bytes.count`
/// are the bytes at `bytes`.
public struct GuestMapping: @unchecked Sendable {
    /// The bus address (guest-physical address, or region offset) of the first byte.
    public var busAddress: UInt64
    /// The mapped bytes, in this process.
    public var bytes: UnsafeMutableRawBufferPointer

    /// Creates a mapping.
    ///
    /// - Parameters:
    ///   - busAddress: The bus address of `bytes`' first byte.
    ///   - bytes: The mapped bytes.
    public init(busAddress: UInt64, bytes: UnsafeMutableRawBufferPointer) {
        self.busAddress = busAddress
        self.bytes = bytes
    }

    /// The bus addresses this mapping covers.
    public var busRange: Range<UInt64> { busAddress..<busAddress &+ UInt64(bytes.count) }
}

extension GuestMemory where Self: ~Copyable {
    /// Translates `(address, count)` into the bytes it names and calls `body` with them: the one
    /// translation call of the seam, bounds-checked and overflow-safe.
    ///
    /// The range must lie inside one mapping; use it for a ring, a header or a test's view of a
    /// buffer. It reads the mappings on every call: it is for set-up and tools, not a hot path
    /// (the queues translate through the table they built once). (The device's descriptor parser accepts a buffer that spans adjacent mappings, as
    /// two segments; this call does not.)
    ///
    /// - Parameters:
    ///   - address: The bus address of the first byte.
    ///   - count: The number of bytes.
    ///   - body: Called with the bytes. The pointer is valid only inside `body`.
    /// - Throws: ``VirtqueueError/Code-swift.struct/addressOutOfRange`` naming the address if it is
    ///   in a gap, runs past its mapping's end or overflows 2^64 (or the memory's mappings are
    ///   malformed); whatever `body` throws, wrapped by the typed-throws rules of the caller.
    @discardableResult
    public func withBytes<R>(
        at address: UInt64,
        count: Int,
        _ body: (UnsafeMutableRawBufferPointer) throws(VirtqueueError) -> R
    ) throws(VirtqueueError) -> R {
        let bytes = try withMappings { (mappings) throws(VirtqueueError) -> UnsafeMutableRawBufferPointer in
            let map = try AddressMap(mappings)
            defer { map.deallocate() }
            return try map.contiguous(address: address, count: count, what: "bytes")
        }
        return try body(bytes)
    }

    /// The memory's mappings, sorted by bus address and validated: not empty, not overlapping,
    /// not past 2^64.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/invalidConfiguration`` naming the mapping.
    public func validatedMappings() throws(VirtqueueError) -> [Range<UInt64>] {
        try withMappings { (mappings) throws(VirtqueueError) in
            let map = try AddressMap(mappings)
            defer { map.deallocate() }
            return (0..<map.count).map { map.windows[$0].range }
        }
    }
}
