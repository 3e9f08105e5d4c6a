/// Reads a fuzz input front to back. Once the bytes run out every read returns `nil` (or zero
/// for the padded reads), so a harness can treat a short input as "stop here".
struct FuzzInput {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var isAtEnd: Bool { position >= bytes.count }

    /// The next byte, or `nil` at the end.
    mutating func byte() -> UInt8? {
        guard position < bytes.count else { return nil }
        defer { position += 1 }
        return bytes[position]
    }

    /// The next byte, or 0 at the end.
    mutating func byteOrZero() -> UInt8 { byte() ?? 0 }

    /// The next two bytes, little-endian; missing bytes read as 0.
    mutating func uint16() -> UInt16 {
        UInt16(byteOrZero()) | UInt16(byteOrZero()) << 8
    }

    /// The next four bytes, little-endian; missing bytes read as 0.
    mutating func uint32() -> UInt32 {
        UInt32(uint16()) | UInt32(uint16()) << 16
    }

    /// Up to `count` of the next bytes (fewer at the end).
    mutating func bytes(upTo count: Int) -> UnsafeRawBufferPointer {
        let end = min(position + count, bytes.count)
        defer { position = end }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<end])
    }
}
