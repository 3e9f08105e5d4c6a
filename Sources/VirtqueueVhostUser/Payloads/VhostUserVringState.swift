/// A vring state description, `{u32 index, u32 num}` (8 bytes): the payload of SET_VRING_NUM,
/// SET_VRING_BASE, GET_VRING_BASE (request and reply), SET_VRING_ENABLE, SET_VRING_ENDIAN and
/// VRING_KICK.
public struct VhostUserVringState: Hashable, Sendable {
    /// The payload's size on the wire.
    public static let size = 8

    /// The queue index.
    public var index: UInt32
    /// The number: a queue size, an index (for packed rings with wrap counters), an enable flag, …
    public var num: UInt32

    /// A vring state.
    public init(index: UInt32, num: UInt32) {
        self.index = index
        self.num = num
    }

    func encode(into writer: inout ByteWriter) {
        writer.append(index)
        writer.append(num)
    }

    static func decode(_ reader: inout ByteReader) -> VhostUserVringState {
        VhostUserVringState(index: reader.u32(), num: reader.u32())
    }
}
