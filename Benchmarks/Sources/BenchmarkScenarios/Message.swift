/// The benchmark message format shared with the C baselines (`vqb_write_message` /
/// `vqb_touch_message`): an 8-byte little-endian sequence number, then payload bytes equal to
/// the sequence number's low byte.
public enum Message {
    /// Writes message `sequence` into `bytes` (at least 16 bytes): the whole payload, or only the
    /// header and last byte when `fillAll` is false (the payload is already in place).
    @inlinable @inline(__always)
    public static func write(_ sequence: UInt64, into bytes: UnsafeMutableRawBufferPointer, fillAll: Bool = true) {
        let base = bytes.baseAddress.unsafelyUnwrapped
        let count = bytes.count
        if fillAll {
            (base + 8).initializeMemory(
                as: UInt8.self,
                repeating: UInt8(truncatingIfNeeded: sequence),
                count: count - 8
            )
        } else {
            base.storeBytes(of: UInt8(truncatingIfNeeded: sequence), toByteOffset: count - 1, as: UInt8.self)
        }
        base.storeBytes(of: sequence.littleEndian, as: UInt64.self)
    }

    /// Touches a message: reads its header and last byte.
    ///
    /// - Returns: The sequence number, or `nil` if the last byte does not match it.
    @inlinable @inline(__always)
    public static func touch(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard bytes.count >= 16 else { return nil }
        let base = bytes.baseAddress.unsafelyUnwrapped
        let sequence = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
        guard base.load(fromByteOffset: bytes.count - 1, as: UInt8.self) == UInt8(truncatingIfNeeded: sequence) else {
            return nil
        }
        return sequence
    }
}
