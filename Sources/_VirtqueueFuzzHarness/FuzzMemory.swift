public import Virtqueue

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Guest memory for one fuzz run: one or more mappings, each a ``FuzzRegion`` of its own (a
/// separate heap allocation with canaries, poisoned under ASan) placed at a bus address.
///
/// With one mapping at bus address 0 it is exactly the region the harnesses used before memory
/// had more than one mapping. The harness keeps a copy and plays the peer through it: its reads
/// and writes go through its own translation (``forEachPiece(at:count:_:)``), never the core's.
/// Call ``deallocate()`` once, after the queue is gone.
public struct FuzzMemory: GuestMemory {
    /// One mapping: bus addresses `bus ..< bus + region.count` are `region`'s bytes.
    public struct Mapping {
        /// The bus address of the first byte.
        public let bus: UInt64
        /// The bytes.
        public let region: FuzzRegion

        /// The bus addresses the mapping covers (it never runs past 2^64 − 1).
        public var busRange: Range<UInt64> { bus..<bus + UInt64(region.count) }
    }

    /// The mappings, in the order given.
    public let mappings: [Mapping]
    let guestMappings: [GuestMapping]
    /// The mappings' indices in bus order: the order of the pieces of a range.
    let busOrder: [Int]

    /// Allocates one region per entry, `count` zeroed bytes at bus address `bus`, its first byte
    /// `skew` bytes past 64-byte alignment.
    public init(_ layout: [(bus: UInt64, count: Int, skew: Int)]) {
        let mappings = layout.map { Mapping(bus: $0.bus, region: FuzzRegion(count: $0.count, skew: $0.skew)) }
        self.mappings = mappings
        guestMappings = mappings.map { GuestMapping(busAddress: $0.bus, bytes: $0.region.bytes) }
        busOrder = mappings.indices.sorted { mappings[$0].bus < mappings[$1].bus }
    }

    /// Frees every mapping's bytes. No copy may be used afterwards.
    public func deallocate() {
        for mapping in mappings { mapping.region.deallocate() }
    }

    public func withMappings<R, E: Error>(
        _ body: (UnsafeBufferPointer<GuestMapping>) throws(E) -> R
    ) throws(E) -> R {
        try guestMappings.withUnsafeBufferPointer { (buffer) throws(E) -> R in try body(buffer) }
    }

    // MARK: The harness's own translation

    /// One piece of a bus range: `count` bytes at `offset` in mapping `mapping`, which are bytes
    /// `source ..< source + count` of the range.
    struct Piece {
        var mapping: Int
        var offset: Int
        var source: Int
        var count: Int
    }

    /// Calls `body` with each mapped piece of `[address, address + count)`, in bus order; bytes
    /// in gaps (or past 2^64) have none. (The mappings do not overlap, so bus order is the order
    /// of the pieces in the range.) Allocates nothing: every harness write goes through it.
    func forEachPiece(at address: UInt64, count: Int, _ body: (Piece) -> Void) {
        guard count > 0 else { return }
        let end = address.addingReportingOverflow(UInt64(count))
        let last = end.overflow ? UInt64.max : end.partialValue
        for index in busOrder {
            let mapping = mappings[index]
            let low = max(address, mapping.busRange.lowerBound)
            let high = min(last, mapping.busRange.upperBound)
            guard low < high else { continue }
            body(
                Piece(
                    mapping: index,
                    offset: Int(low - mapping.bus),
                    source: Int(low - address),
                    count: Int(high - low)
                )
            )
        }
    }

    /// The host address of `[address, address + count)` when it lies inside one mapping.
    func pointer(at address: UInt64, count: Int) -> UnsafeMutableRawPointer? {
        for mapping in mappings where address >= mapping.bus && address - mapping.bus <= UInt64(mapping.region.count) {
            let offset = Int(address - mapping.bus)
            if count >= 0 && count <= mapping.region.count - offset { return mapping.region.base + offset }
        }
        return nil
    }

    /// Reads a little-endian 16-bit value, which must lie inside one mapping.
    func load16(_ address: UInt64) -> UInt16 {
        guard let pointer = pointer(at: address, count: 2) else { return 0 }
        return UInt16(littleEndian: UnsafeRawPointer(pointer).loadUnaligned(as: UInt16.self))
    }

    /// Reads a little-endian 32-bit value, which must lie inside one mapping.
    func load32(_ address: UInt64) -> UInt32 {
        guard let pointer = pointer(at: address, count: 4) else { return 0 }
        return UInt32(littleEndian: UnsafeRawPointer(pointer).loadUnaligned(as: UInt32.self))
    }

    /// Which mapping host bytes `[pointer, pointer + count)` lie in, and their bus address. A
    /// zero-length view may sit at a mapping's end.
    func locate(_ pointer: UnsafeRawPointer, count: Int) -> (mapping: Int, address: UInt64)? {
        for (index, mapping) in mappings.enumerated() {
            let offset = pointer - UnsafeRawPointer(mapping.region.base)
            if offset >= 0 && count >= 0 && offset <= mapping.region.count - count {
                return (index, mapping.bus + UInt64(offset))
            }
        }
        return nil
    }

    /// Checks every mapping's canaries.
    func checkCanaries() throws(InvariantFailure) {
        for mapping in mappings { try mapping.region.checkCanaries() }
    }
}

/// The harness's copy of what every byte of every mapping must hold.
struct MemoryShadow {
    var bytes: [[UInt8]]

    init(_ memory: FuzzMemory) {
        bytes = memory.mappings.map { Array(UnsafeRawBufferPointer($0.region.bytes)) }
    }

    /// Records `source` as written at `piece`.
    mutating func set(_ piece: FuzzMemory.Piece, from source: UnsafeRawBufferPointer) {
        guard let start = source.baseAddress, piece.count > 0 else { return }
        bytes[piece.mapping].withUnsafeMutableBytes {
            ($0.baseAddress! + piece.offset).copyMemory(from: start + piece.source, byteCount: piece.count)
        }
    }

    /// Records `count` bytes of `value` at `offset` of mapping `mapping`.
    mutating func fill(mapping: Int, offset: Int, count: Int, with value: UInt8) {
        for index in offset..<offset + count { bytes[mapping][index] = value }
    }

    /// The first byte of `mapping`'s `offsets` that differs from the shadow, if any.
    func firstDifference(in memory: FuzzMemory, mapping: Int, offsets: Range<Int>) -> (offset: Int, actual: UInt8)? {
        guard !offsets.isEmpty else { return nil }
        let region = memory.mappings[mapping].region
        let same = bytes[mapping].withUnsafeBytes {
            memcmp($0.baseAddress! + offsets.lowerBound, region.base + offsets.lowerBound, offsets.count) == 0
        }
        if same { return nil }
        let actual = UnsafeRawBufferPointer(region.bytes)
        guard let index = offsets.first(where: { actual[$0] != bytes[mapping][$0] }) else { return nil }
        return (index, actual[index])
    }
}
