/// One message as it came off the socket: a validated header, exactly `header.payloadSize`
/// payload bytes, and the file descriptors that arrived with it (owned by the frame).
///
/// Decode it as a request (``decodeRequest(limits:)``, the back-end's side) or as a reply
/// (``decodeReply(to:limits:)``, the front-end's side).
public struct VhostUserFrame: Sendable {
    /// The header.
    public var header: VhostUserHeader
    /// The payload.
    public var payload: [UInt8]
    /// The file descriptors that came with the message.
    public var fileDescriptors: [VhostUserFileDescriptor]

    /// A frame.
    public init(header: VhostUserHeader, payload: [UInt8], fileDescriptors: [VhostUserFileDescriptor]) {
        self.header = header
        self.payload = payload
        self.fileDescriptors = fileDescriptors
    }

    /// Splits a whole message (header and payload) into a frame, checking the header (see
    /// ``VhostUserHeader/decode(_:isReply:limits:)``) and that `size` equals the bytes after it.
    ///
    /// - Throws: ``VhostUserError``; the descriptors are closed (dropped) on a throw.
    public init(
        bytes: [UInt8],
        fileDescriptors: [VhostUserFileDescriptor],
        isReply: Bool = false,
        limits: VhostUserLimits = VhostUserLimits()
    ) throws(VhostUserError) {
        let header = try VhostUserHeader.decode(bytes, isReply: isReply, limits: limits)
        let received = bytes.count - VhostUserHeader.size
        guard received == Int(header.payloadSize) else {
            throw VhostUserError(
                .sizeMismatch,
                "\(header.request): the header's size is \(header.payloadSize) but \(received) payload bytes came"
            )
        }
        self.init(header: header, payload: Array(bytes[VhostUserHeader.size...]), fileDescriptors: fileDescriptors)
    }
}

/// A request decoded from a frame: its header (for NEED_REPLY) and its message.
public struct VhostUserDecodedRequest: Sendable {
    /// The header.
    public var header: VhostUserHeader
    /// The message, owning its file descriptors.
    public var message: VhostUserMessage

    /// Whether the front-end set NEED_REPLY (it wants a REPLY_ACK status unless the request has
    /// a reply of its own).
    public var needsReply: Bool { header.needsReply }
}
