/// A log description (SET_LOG_BASE): `{u64 mmap_size, u64 mmap_offset}`, the dirty-page log of a
/// live migration in the message's file descriptor.
public struct VhostUserLogDescription: Hashable, Sendable {
    /// The payload's size on the wire.
    public static let size = 16

    /// The size of the log.
    public var mmapSize: UInt64
    /// Where the log starts in its file descriptor.
    public var mmapOffset: UInt64

    /// A log description.
    public init(mmapSize: UInt64, mmapOffset: UInt64) {
        self.mmapSize = mmapSize
        self.mmapOffset = mmapOffset
    }

    func encode(into writer: inout ByteWriter) {
        writer.append(mmapSize)
        writer.append(mmapOffset)
    }

    static func decode(_ reader: inout ByteReader) -> VhostUserLogDescription {
        VhostUserLogDescription(mmapSize: reader.u64(), mmapOffset: reader.u64())
    }
}
