public import Virtqueue

/// A region in this process's heap, shared by a driver and a device on different threads.
///
/// The memory is one 64-byte-aligned allocation, freed when the last copy of the region goes
/// away. Copies are cheap handles to the same bytes: give one to the driver's queue and one to
/// the device's.
public struct HeapRegion: MemoryRegion, Sendable {
    @usableFromInline let allocation: Allocation
    /// The layout written by ``init(layout:)``; queues use it instead of reading the header again.
    public let regionLayout: RegionLayout?

    /// Allocates a zeroed region of `byteCount` bytes.
    ///
    /// - Throws: `VirtqueueError` with `VirtqueueError/Code/invalidConfiguration`
    ///   if `byteCount` is not positive.
    public init(byteCount: Int) throws(VirtqueueError) {
        guard byteCount > 0 else {
            throw VirtqueueError(.invalidConfiguration, "region size \(byteCount) is not positive")
        }
        allocation = Allocation(byteCount: byteCount)
        regionLayout = nil
    }

    /// Allocates a region for `layout` and writes the layout's header (`RegionLayout/initialize(_:)`).
    public init(layout: RegionLayout) throws(VirtqueueError) {
        guard layout.regionSize > 0 else {
            throw VirtqueueError(.invalidConfiguration, "region size \(layout.regionSize) is not positive")
        }
        allocation = Allocation(byteCount: layout.regionSize)
        regionLayout = layout
        try layout.initialize(self)
    }

    @inlinable
    public var count: Int { allocation.count }

    @inlinable
    public func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: allocation.base, count: allocation.count))
    }

    /// Owns the bytes; freed in `deinit`.
    @usableFromInline
    final class Allocation: @unchecked Sendable {
        @usableFromInline let base: UnsafeMutableRawPointer
        @usableFromInline let count: Int

        init(byteCount: Int) {
            base = .allocate(byteCount: byteCount, alignment: 64)
            base.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
            count = byteCount
        }

        deinit { base.deallocate() }
    }
}
