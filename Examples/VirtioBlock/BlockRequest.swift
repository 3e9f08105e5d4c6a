/// The virtio-blk request format (virtio 1.x §5.2.6), as this example speaks it.
///
/// A request is one chain: a 16-byte device-readable header `{le32 type, le32 reserved,
/// le64 sector}`, then the data (device-readable for a write, device-writable for a read),
/// then one device-writable status byte.
public enum BlockRequest {
    /// Bytes per sector.
    public static let sectorSize = 512
    /// Bytes in the request header.
    public static let headerSize = 16
    /// The bytes of a GET_ID reply (`VIRTIO_BLK_ID_BYTES`).
    public static let identifierSize = 20

    /// `VIRTIO_BLK_T_*`.
    public enum Kind: UInt32, Sendable {
        /// Read sectors into the device-writable data segments.
        case read = 0
        /// Write the device-readable data segments to sectors.
        case write = 1
        /// Make every completed write durable.
        case flush = 4
        /// Write the device's identifier (up to 20 bytes).
        case identify = 8
    }

    /// `VIRTIO_BLK_S_*`.
    public enum Status: UInt8, Sendable {
        case ok = 0
        case ioError = 1
        case unsupported = 2
    }

    /// Encodes a header into `buffer` (at least ``headerSize`` bytes).
    public static func encodeHeader(kind: Kind, sector: UInt64, into buffer: UnsafeMutableRawBufferPointer) {
        buffer.storeBytes(of: kind.rawValue.littleEndian, toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
    }
}
