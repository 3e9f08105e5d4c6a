/// A back-end's reply on the main socket: what a back-end role encodes and a front-end role decodes.
public enum VhostUserReply: Sendable {
    /// A u64: the answer to GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
    /// GET_MAX_MEM_SLOTS, GET_STATUS, or a REPLY_ACK status (0 success, anything else failure).
    case u64(UInt64)
    /// The answer to GET_VRING_BASE: the queue's index and its next available index.
    case vringState(VhostUserVringState)
    /// The answer to GET_CONFIG; empty bytes report a failure.
    case config(VhostUserConfigSpace)
    /// The answer to GET_INFLIGHT_FD: the area and its fd.
    case inflight(VhostUserInflightDescription, VhostUserFileDescriptor)

    /// A REPLY_ACK status: 0 for success, 1 for failure.
    public static func ack(success: Bool) -> VhostUserReply { .u64(success ? 0 : 1) }

    /// Encodes the reply to `request`: the request's number, version 1 and REPLY.
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidArgument`` for a payload above the bound.
    public func encode(answering request: VhostUserRequest) throws(VhostUserError) -> VhostUserOutgoingMessage {
        var writer = ByteWriter()
        var descriptors: [VhostUserFileDescriptor] = []
        switch self {
        case .u64(let value): writer.append(value)
        case .vringState(let state): state.encode(into: &writer)
        case .config(let config): config.encode(into: &writer)
        case .inflight(let inflight, let descriptor):
            inflight.encode(into: &writer)
            descriptors = [descriptor]
        }
        return try VhostUserOutgoingMessage(
            request: request,
            flags: [.version1, .reply],
            payload: writer.bytes,
            fileDescriptors: descriptors
        )
    }
}

extension VhostUserFrame {
    /// Decodes and validates the frame as the back-end's reply to `request`, treating it as peer input.
    ///
    /// The frame must answer `request` (same number). Then: GET_VRING_BASE → a vring state (8
    /// bytes, index below the queue count); GET_CONFIG → a config access (12 + size bytes, size 0
    /// allowed as the failure report, inside the config space, flags 0 or 1); GET_INFLIGHT_FD →
    /// an inflight description (24 bytes) with exactly one fd, an area of size above 0 that fits
    /// an `off_t`, and a queue count and size in range; anything else → a u64 (8 bytes) with no fd.
    ///
    /// Decode the header with `isReply: true` (``VhostUserFrame/init(bytes:fileDescriptors:isReply:limits:)``,
    /// or the socket's `receive(expectingReply: true)`).
    ///
    /// - Throws: ``VhostUserError`` naming the offending value; the descriptors are closed.
    public consuming func decodeReply(
        to request: VhostUserRequest,
        limits: VhostUserLimits
    ) throws(VhostUserError) -> VhostUserReply {
        let context = "reply to \(request)"
        guard header.request == request else {
            throw VhostUserError(.unexpectedReply, "\(context): the reply is to \(header.request)")
        }
        var descriptors = fileDescriptors
        func fixed(_ size: Int, descriptors expected: Int) throws(VhostUserError) -> ByteReader {
            guard payload.count == size else {
                throw VhostUserError(
                    .invalidPayloadSize,
                    "\(context): the payload must be \(size) bytes; it is \(payload.count)"
                )
            }
            guard descriptors.count == expected else {
                throw VhostUserError(
                    .fileDescriptorCount,
                    "\(context): \(descriptors.count) file descriptors came; it takes \(expected)"
                )
            }
            return ByteReader(payload)
        }
        switch request {
        case .getVringBase:
            var reader = try fixed(VhostUserVringState.size, descriptors: 0)
            let state = VhostUserVringState.decode(&reader)
            guard state.index < UInt32(limits.queueCount) else {
                throw VhostUserError(
                    .queueIndexOutOfRange,
                    "\(context): queue index \(state.index) is not below the queue count \(limits.queueCount)"
                )
            }
            return .vringState(state)
        case .getConfig:
            guard descriptors.isEmpty else {
                throw VhostUserError(
                    .fileDescriptorCount,
                    "\(context): \(descriptors.count) file descriptors came; it takes none"
                )
            }
            return .config(
                try VhostUserConfigSpace.decode(payload, context, spaceSize: limits.configSpaceSize, allowEmpty: true)
            )
        case .getInflightFileDescriptor:
            var reader = try fixed(VhostUserInflightDescription.size, descriptors: 1)
            let inflight = VhostUserInflightDescription.decode(&reader)
            try inflight.validate(context, maxQueues: limits.queueCount, checkingArea: true)
            return .inflight(inflight, descriptors.removeFirst())
        default:
            var reader = try fixed(8, descriptors: 0)
            return .u64(reader.u64())
        }
    }
}
