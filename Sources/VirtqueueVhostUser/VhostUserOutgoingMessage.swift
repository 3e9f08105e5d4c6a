/// A message ready to send: its bytes (header and payload) and the descriptors to pass with
/// `SCM_RIGHTS`. Holding the descriptors keeps them open until the message is sent.
public struct VhostUserOutgoingMessage: Sendable {
    /// The header and payload.
    public var bytes: [UInt8]
    /// The descriptors that go with the message, in order.
    public var fileDescriptors: [VhostUserFileDescriptor]

    /// A message.
    public init(bytes: [UInt8], fileDescriptors: [VhostUserFileDescriptor] = []) {
        self.bytes = bytes
        self.fileDescriptors = fileDescriptors
    }

    /// Header plus payload, with `size` set from the payload.
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidArgument`` if the payload is above
    ///   ``VhostUserLimits/maxPayloadSize`` or there are more than
    ///   ``VhostUserLimits/maxFileDescriptors`` descriptors (the peer would refuse it).
    init(
        request: VhostUserRequest,
        flags: VhostUserHeader.Flags,
        payload: [UInt8],
        fileDescriptors: [VhostUserFileDescriptor]
    ) throws(VhostUserError) {
        guard payload.count <= VhostUserLimits().maxPayloadSize else {
            throw VhostUserError(.invalidArgument, "\(request): a \(payload.count)-byte payload is above the bound")
        }
        guard fileDescriptors.count <= VhostUserLimits.maxFileDescriptors else {
            throw VhostUserError(
                .invalidArgument,
                "\(request): \(fileDescriptors.count) descriptors are above the bound of \(VhostUserLimits.maxFileDescriptors)"
            )
        }
        let header = VhostUserHeader(request: request, flags: flags, payloadSize: UInt32(payload.count))
        self.init(bytes: header.bytes + payload, fileDescriptors: fileDescriptors)
    }
}
