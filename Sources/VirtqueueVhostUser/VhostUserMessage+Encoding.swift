extension VhostUserMessage {
    /// Encodes the request as a front-end sends it: version 1, NEED_REPLY if asked, the payload
    /// little-endian, and the descriptors it carries (for an ``unsupported(_:)`` request, an empty
    /// payload).
    ///
    /// - Parameter needsReply: Set NEED_REPLY (REPLY_ACK).
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidArgument`` for a payload above the bound.
    public func encode(needsReply: Bool = false) throws(VhostUserError) -> VhostUserOutgoingMessage {
        var writer = ByteWriter()
        var descriptors: [VhostUserFileDescriptor] = []
        switch self {
        case .getFeatures, .setOwner, .resetOwner, .getProtocolFeatures, .getQueueNum, .resetDevice,
            .getMaxMemorySlots, .getStatus, .unsupported:
            break
        case .setFeatures(let value), .sendRARP(let value), .netSetMTU(let value):
            writer.append(value)
        case .setProtocolFeatures(let features):
            writer.append(features.rawValue)
        case .setStatus(let status):
            writer.append(UInt64(status))
        case .setMemoryTable(let table):
            table.encode(into: &writer)
            descriptors = table.fileDescriptors
        case .setLogBase(let log, let descriptor):
            log.encode(into: &writer)
            descriptors = descriptor.map { [$0] } ?? []
        case .setLogFileDescriptor(let descriptor), .setBackendRequestFileDescriptor(let descriptor):
            descriptors = [descriptor]
        case .setVringNum(let state), .setVringBase(let state), .getVringBase(let state),
            .setVringEnable(let state), .setVringEndian(let state), .vringKick(let state):
            state.encode(into: &writer)
        case .setVringAddress(let address):
            address.encode(into: &writer)
        case .setVringKick(let file), .setVringCall(let file), .setVringError(let file):
            writer.append(file.word)
            descriptors = file.fileDescriptor.map { [$0] } ?? []
        case .getConfig(let config), .setConfig(let config):
            config.encode(into: &writer)
        case .getInflightFileDescriptor(let inflight):
            inflight.encode(into: &writer)
        case .setInflightFileDescriptor(let inflight, let descriptor):
            inflight.encode(into: &writer)
            descriptors = [descriptor]
        case .addMemoryRegion(let region, let descriptor):
            writer.append(UInt64(0))
            region.encode(into: &writer)
            descriptors = [descriptor]
        case .removeMemoryRegion(let region):
            writer.append(UInt64(0))
            region.encode(into: &writer)
        }
        var flags = VhostUserHeader.Flags.version1
        if needsReply { flags.insert(.needReply) }
        return try VhostUserOutgoingMessage(
            request: request,
            flags: flags,
            payload: writer.bytes,
            fileDescriptors: descriptors
        )
    }
}
