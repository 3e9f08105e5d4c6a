import Glibc
import Virtqueue

/// A ``PortableEnd``'s memory as the helper process maps it: each ``PortableMapping`` mapped
/// `MAP_SHARED`, read-write, at its bus address; unmapped when the memory goes away.
final class PortableMemory: GuestMemory {
    let mappings: [GuestMapping]

    /// Maps every mapping.
    ///
    /// - Throws: ``HelperError`` naming the mapping `mmap(2)` refused, and `errno`.
    init(_ portable: [PortableMapping]) throws(HelperError) {
        var mapped: [GuestMapping] = []
        for mapping in portable {
            guard mapping.byteCount > 0, mapping.offset >= 0 else {
                Self.unmap(mapped)
                throw HelperError("mapping \(mapping) is empty or at a negative offset")
            }
            let address = mmap(
                nil,
                mapping.byteCount,
                PROT_READ | PROT_WRITE,
                MAP_SHARED,
                mapping.descriptor,
                off_t(mapping.offset)
            )
            guard let address, address != MAP_FAILED else {
                let error = errno
                Self.unmap(mapped)
                throw HelperError("mmap of \(mapping) failed: errno \(error) (\(String(cString: strerror(error))))")
            }
            mapped.append(
                GuestMapping(
                    busAddress: mapping.busAddress,
                    bytes: UnsafeMutableRawBufferPointer(start: address, count: mapping.byteCount)
                )
            )
        }
        mappings = mapped
    }

    deinit {
        Self.unmap(mappings)
    }

    func withMappings<R, E: Error>(_ body: (UnsafeBufferPointer<GuestMapping>) throws(E) -> R) throws(E) -> R {
        try mappings.withUnsafeBufferPointer { (buffer) throws(E) -> R in try body(buffer) }
    }

    private static func unmap(_ mappings: [GuestMapping]) {
        for mapping in mappings {
            _ = munmap(mapping.bytes.baseAddress, mapping.bytes.count)
        }
    }
}
