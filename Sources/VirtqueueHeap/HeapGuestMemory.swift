public import Virtqueue

/// Guest memory of several mappings in this process's heap, each at a bus address you choose:
/// the shape of a virtual machine's memory (several ranges of guest-physical addresses, with
/// gaps between them), for threads.
///
/// Each mapping is its own 64-byte-aligned allocation, so mappings that are adjacent in bus
/// address are not adjacent in this process: a buffer that spans them reaches the device as two
/// segments, as it would from a guest. Copies are handles to the same bytes (the class is shared
/// by a driver's queue and a device's); the allocations are freed when the last one goes.
///
/// ```swift
/// let memory = try HeapGuestMemory(mappings: [
///     (busAddress: 0x1000, byteCount: 0x4000),      // the rings
///     (busAddress: 0x10_0000, byteCount: 1 << 20),  // buffers
/// ])
/// ```
public final class HeapGuestMemory: GuestMemory, @unchecked Sendable {
    let mappings: [GuestMapping]

    /// Allocates one zeroed mapping per entry.
    ///
    /// - Parameter mappings: Each mapping's bus address and size.
    /// - Throws: `VirtqueueError` with `invalidConfiguration` if a size is not positive, a
    ///   range runs past 2^64, or two ranges overlap.
    public init(mappings: [(busAddress: UInt64, byteCount: Int)]) throws(VirtqueueError) {
        var made: [GuestMapping] = []
        for (busAddress, byteCount) in mappings {
            guard byteCount > 0 else {
                for mapping in made { mapping.bytes.deallocate() }
                throw VirtqueueError(.invalidConfiguration, "mapping size \(byteCount) is not positive")
            }
            let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: byteCount, alignment: 64)
            bytes.initializeMemory(as: UInt8.self, repeating: 0)
            made.append(GuestMapping(busAddress: busAddress, bytes: bytes))
        }
        self.mappings = made
        // Every property is set: if this throws, deinit frees the allocations.
        _ = try validatedMappings()
    }

    deinit {
        for mapping in mappings { mapping.bytes.deallocate() }
    }

    public func withMappings<R, E: Error>(
        _ body: (UnsafeBufferPointer<GuestMapping>) throws(E) -> R
    ) throws(E) -> R {
        try mappings.withUnsafeBufferPointer { (buffer) throws(E) -> R in try body(buffer) }
    }
}
