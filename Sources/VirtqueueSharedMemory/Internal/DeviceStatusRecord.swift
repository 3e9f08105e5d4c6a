import Glibc

/// What a device host tells its parent on the liveness socket about its device
/// (`docs/wire-format.md`, section 8.1): that the device started serving, that it could not
/// start, or that serving ended with an error — and which.
///
/// One `SOCK_SEQPACKET` message, little-endian:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0x00 | 8 | magic, ASCII `VQSTATUS` |
/// | 0x08 | 2 | version, 1 |
/// | 0x0A | 2 | length: 16 plus the text's bytes |
/// | 0x0C | 2 | kind: 1 started, 2 failed to start, 3 serving failed |
/// | 0x0E | 2 | reserved, zero |
/// | 0x10 | length − 16 | the error's description, UTF-8, at most ``maximumTextByteCount`` bytes |
package struct DeviceStatusRecord: Equatable {
    /// ASCII `VQSTATUS`.
    static let magic: UInt64 = 0x5355_5441_5453_5156
    static let version: UInt16 = 1
    static let headerByteCount = 16
    /// The longest description sent; longer ones are cut at a character boundary.
    static let maximumTextByteCount = 1024
    /// The longest record.
    package static let maximumByteCount = headerByteCount + maximumTextByteCount

    /// What the record says.
    package enum Kind: UInt16, Equatable {
        /// The device's queue is attached and the device created: it serves from now on.
        case started = 1
        /// The device could not start; the text says why.
        case failedToStart = 2
        /// Serving ended with an error; the text is the error.
        case servingFailed = 3
    }

    package var kind: Kind
    package var text: String

    init(_ kind: Kind, _ text: String = "") {
        self.kind = kind
        self.text = text
    }

    func encoded() -> [UInt8] {
        var textBytes = Array(text.utf8)
        if textBytes.count > Self.maximumTextByteCount {
            var end = Self.maximumTextByteCount
            // Not in the middle of a character: back up over continuation bytes.
            while end > 0 && textBytes[end] & 0xC0 == 0x80 { end -= 1 }
            textBytes = Array(textBytes[0..<end])
        }
        var bytes = [UInt8](repeating: 0, count: Self.headerByteCount)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: Self.magic.littleEndian, toByteOffset: 0x00, as: UInt64.self)
            raw.storeBytes(of: Self.version.littleEndian, toByteOffset: 0x08, as: UInt16.self)
            raw.storeBytes(
                of: UInt16(Self.headerByteCount + textBytes.count).littleEndian,
                toByteOffset: 0x0A,
                as: UInt16.self
            )
            raw.storeBytes(of: kind.rawValue.littleEndian, toByteOffset: 0x0C, as: UInt16.self)
        }
        return bytes + textBytes
    }

    /// Parses a record from the child's bytes, which are untrusted: `nil` unless they are
    /// exactly one well-formed record. The text is decoded with replacement characters for
    /// invalid UTF-8.
    package init?(parsing bytes: [UInt8]) {
        guard bytes.count >= Self.headerByteCount, bytes.count <= Self.maximumByteCount else { return nil }
        let header = bytes.withUnsafeBytes { raw -> (kind: Kind, length: Int)? in
            guard UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0x00, as: UInt64.self)) == Self.magic,
                UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 0x08, as: UInt16.self)) == Self.version,
                UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 0x0E, as: UInt16.self)) == 0,
                let kind = Kind(
                    rawValue: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 0x0C, as: UInt16.self))
                )
            else { return nil }
            return (kind, Int(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 0x0A, as: UInt16.self))))
        }
        guard let header, header.length == bytes.count else { return nil }
        self.kind = header.kind
        self.text = String(decoding: bytes[Self.headerByteCount...], as: UTF8.self)
    }

    /// Writes the record to `socket` with one `write(2)` (which the sandbox policy allows on the
    /// liveness socket). A parent that is gone or has closed its end is not told; nothing else
    /// is affected.
    func send(on socket: CInt) {
        let bytes = encoded()
        _ = bytes.withUnsafeBytes { write(socket, $0.baseAddress, $0.count) }
    }
}
