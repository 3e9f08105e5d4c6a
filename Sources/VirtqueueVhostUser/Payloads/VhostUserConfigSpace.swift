/// A device config space access (GET_CONFIG request and reply, SET_CONFIG):
/// `{u32 offset, u32 size, u32 flags, u8 payload[size]}`.
public struct VhostUserConfigSpace: Hashable, Sendable {
    /// The size of the fixed part on the wire.
    public static let headerSize = 12

    /// `flags` 0: an access by the front-end on the guest's behalf (writable fields only).
    public static let frontEndFlag: UInt32 = 0
    /// `flags` 1: an access for live migration (read-only fields may be written).
    public static let migrationFlag: UInt32 = 1

    /// The offset in the config space.
    public var offset: UInt32
    /// The flags: ``frontEndFlag`` or ``migrationFlag``.
    public var flags: UInt32
    /// The bytes (for a GET_CONFIG request, as many zeros as it wants to read). Empty in a
    /// GET_CONFIG reply means the back-end failed.
    public var bytes: [UInt8]

    /// A config access.
    public init(offset: UInt32, flags: UInt32 = VhostUserConfigSpace.frontEndFlag, bytes: [UInt8]) {
        self.offset = offset
        self.flags = flags
        self.bytes = bytes
    }

    /// The size of the access (the wire's `size`).
    public var size: Int { bytes.count }

    func encode(into writer: inout ByteWriter) {
        writer.append(offset)
        writer.append(UInt32(truncatingIfNeeded: bytes.count))
        writer.append(flags)
        writer.append(contentsOf: bytes)
    }

    /// Decodes and checks an access: the payload is exactly 12 + `size` bytes; unless `allowEmpty`
    /// (a GET_CONFIG reply reporting failure), `size` is above 0; `offset + size` is inside a
    /// config space of `spaceSize` bytes; `flags` is 0 or 1.
    static func decode(
        _ payload: [UInt8],
        _ context: String,
        spaceSize: Int,
        allowEmpty: Bool
    ) throws(VhostUserError) -> VhostUserConfigSpace {
        guard payload.count >= headerSize else {
            throw VhostUserError(
                .invalidPayloadSize,
                "\(context): a config access needs at least 12 bytes; the payload has \(payload.count)"
            )
        }
        var reader = ByteReader(payload)
        let offset = reader.u32()
        let size = reader.u32()
        let flags = reader.u32()
        guard UInt64(payload.count) == UInt64(headerSize) + UInt64(size) else {
            throw VhostUserError(
                .invalidPayloadSize,
                "\(context): config size \(size) needs a payload of \(UInt64(headerSize) + UInt64(size)) bytes; "
                    + "it has \(payload.count)"
            )
        }
        guard size > 0 || allowEmpty else {
            throw VhostUserError(.invalidConfigAccess, "\(context): config access of size 0 at offset \(offset)")
        }
        guard UInt64(offset) + UInt64(size) <= UInt64(spaceSize) else {
            throw VhostUserError(
                .invalidConfigAccess,
                "\(context): config offset \(offset) + size \(size) is past the \(spaceSize)-byte config space"
            )
        }
        guard flags <= migrationFlag else {
            throw VhostUserError(.invalidConfigAccess, "\(context): config flags \(flags) are neither 0 nor 1")
        }
        return VhostUserConfigSpace(offset: offset, flags: flags, bytes: reader.rest())
    }
}
