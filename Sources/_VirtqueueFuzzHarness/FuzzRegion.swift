public import Virtqueue

/// A region for one fuzz run: a 64-byte-aligned heap allocation with canary bytes on both
/// sides, so a run can prove that the queue under test touched nothing outside the region.
/// Under AddressSanitizer (the fuzz targets) the canaries are poisoned, so even a one-byte
/// read outside the region is reported at once; without it (`swift test`) the canary bytes are
/// checked for writes.
///
/// Copies are handles to the same bytes: the queue owns one, the harness (playing the hostile
/// peer) keeps another. Call ``deallocate()`` once, after the queue is gone.
public struct FuzzRegion: MemoryRegion {
    static let canarySize = 64
    static let canaryByte: UInt8 = 0xA5

    let allocation: UnsafeMutableRawPointer
    /// The region's first byte.
    public let base: UnsafeMutableRawPointer
    /// The number of bytes in the region.
    public let count: Int

    /// The bytes before the region: the canary band and the skew.
    let leading: Int

    /// Allocates `count` zeroed bytes between two canary bands.
    ///
    /// - Parameter skew: Bytes (0…15) by which the first byte misses 64-byte alignment: a
    ///   mapping of buffers needs no alignment, and a skewed one shows the core assumes none.
    public init(count: Int, skew: Int = 0) {
        self.count = count
        leading = Self.canarySize + skew
        allocation = .allocate(byteCount: count + leading + Self.canarySize, alignment: 64)
        allocation.initializeMemory(
            as: UInt8.self,
            repeating: Self.canaryByte,
            count: count + leading + Self.canarySize
        )
        base = allocation + leading
        base.initializeMemory(as: UInt8.self, repeating: 0, count: count)
        AddressSanitizer.poison?(allocation, leading)
        AddressSanitizer.poison?(base + count, Self.canarySize)
    }

    /// Allocates a region holding a copy of `bytes`.
    public init(copying bytes: UnsafeRawBufferPointer) {
        self.init(count: bytes.count)
        if let source = bytes.baseAddress, bytes.count > 0 {
            base.copyMemory(from: source, byteCount: bytes.count)
        }
    }

    /// Frees the bytes. No copy may be used afterwards.
    public func deallocate() {
        AddressSanitizer.unpoison?(allocation, count + leading + Self.canarySize)
        allocation.deallocate()
    }

    public func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: base, count: count))
    }

    /// The region's bytes, for the harness's own reads and writes.
    var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: count) }

    /// Checks that both canary bands are intact (under AddressSanitizer, poisoning already has).
    func checkCanaries() throws(InvariantFailure) {
        // Poisoned canaries cannot be touched unnoticed (nor read here), except the last bytes
        // before a skewed region that share an 8-byte ASan granule with its first byte.
        let unpoisoned = leading % 8
        if AddressSanitizer.isActive {
            let shared = UnsafeRawBufferPointer(start: base - unpoisoned, count: unpoisoned)
            if let index = shared.firstIndex(where: { $0 != Self.canaryByte }) {
                throw InvariantFailure("canary byte \(index - unpoisoned) before the region was overwritten")
            }
            return
        }
        let before = UnsafeRawBufferPointer(start: allocation, count: leading)
        let after = UnsafeRawBufferPointer(start: base + count, count: Self.canarySize)
        for (name, band) in [("before", before), ("after", after)] {
            if let index = band.firstIndex(where: { $0 != Self.canaryByte }) {
                throw InvariantFailure("canary byte \(index) \(name) the region was overwritten with \(band[index])")
            }
        }
    }

    /// Whether `[pointer, pointer + count)` lies inside `area` (offsets into this region).
    func contains(_ pointer: UnsafeRawPointer, count: Int, in area: Range<Int>) -> Bool {
        let offset = pointer - UnsafeRawPointer(base)
        return offset >= area.lowerBound && count >= 0 && offset <= area.upperBound - count
    }
}
