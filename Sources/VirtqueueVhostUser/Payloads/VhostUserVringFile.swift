/// The payload of SET_VRING_KICK, SET_VRING_CALL and SET_VRING_ERR: a u64 with the queue index in
/// bits 0–7 and, in bit 8, the "no fd" flag (polling instead of an eventfd); the eventfd itself
/// travels as the message's one file descriptor unless the flag is set.
public struct VhostUserVringFile: Sendable {
    /// Bits 0–7 of the word.
    public static let indexMask: UInt64 = 0xFF
    /// Bit 8 of the word: no file descriptor comes with the message.
    public static let noFileDescriptorFlag: UInt64 = 0x100

    /// The queue index.
    public var index: UInt8
    /// The eventfd, or `nil` when the front-end set the no-fd flag.
    public var fileDescriptor: VhostUserFileDescriptor?

    /// A vring file.
    public init(index: UInt8, fileDescriptor: VhostUserFileDescriptor?) {
        self.index = index
        self.fileDescriptor = fileDescriptor
    }

    /// The u64 on the wire.
    public var word: UInt64 {
        UInt64(index) | (fileDescriptor == nil ? Self.noFileDescriptorFlag : 0)
    }
}
