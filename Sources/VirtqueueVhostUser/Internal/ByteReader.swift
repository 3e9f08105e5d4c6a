/// Reads little-endian integers from a byte array. Callers check the length first; a read past
/// the end yields zeros rather than trapping, so a mistake in a size check can never crash on peer bytes.
struct ByteReader {
    let bytes: [UInt8]
    private(set) var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { max(bytes.count - offset, 0) }

    mutating func u8() -> UInt8 {
        defer { offset += 1 }
        return offset < bytes.count ? bytes[offset] : 0
    }

    mutating func u16() -> UInt16 {
        UInt16(u8()) | UInt16(u8()) << 8
    }

    mutating func u32() -> UInt32 {
        UInt32(u16()) | UInt32(u16()) << 16
    }

    mutating func u64() -> UInt64 {
        UInt64(u32()) | UInt64(u32()) << 32
    }

    mutating func rest() -> [UInt8] {
        defer { offset = bytes.count }
        return offset < bytes.count ? Array(bytes[offset...]) : []
    }
}

/// Appends little-endian integers to a byte array.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func append(_ value: UInt8) { bytes.append(value) }

    mutating func append(_ value: UInt16) {
        bytes.append(UInt8(truncatingIfNeeded: value))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
    }

    mutating func append(_ value: UInt32) {
        append(UInt16(truncatingIfNeeded: value))
        append(UInt16(truncatingIfNeeded: value >> 16))
    }

    mutating func append(_ value: UInt64) {
        append(UInt32(truncatingIfNeeded: value))
        append(UInt32(truncatingIfNeeded: value >> 32))
    }

    mutating func append(contentsOf other: [UInt8]) { bytes.append(contentsOf: other) }
}
