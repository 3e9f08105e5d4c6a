/// A front-end request, decoded and validated: what a back-end role acts on, and what a
/// front-end role encodes.
///
/// File descriptors that came with a message are owned by it (``VhostUserFileDescriptor``): take
/// the ones the role keeps; dropping the message closes the rest. Requests this layer does not
/// decode arrive as ``unsupported(_:)`` (their payload read and bounded, their descriptors
/// closed), for the role to refuse.
public enum VhostUserMessage: Sendable {
    /// GET_FEATURES (1).
    case getFeatures
    /// SET_FEATURES (2): the virtio feature bits.
    case setFeatures(UInt64)
    /// SET_OWNER (3).
    case setOwner
    /// RESET_OWNER (4).
    case resetOwner
    /// SET_MEM_TABLE (5).
    case setMemoryTable(VhostUserMemoryTable)
    /// SET_LOG_BASE (6): the log area and, with LOG_SHMFD, its fd.
    case setLogBase(VhostUserLogDescription, VhostUserFileDescriptor?)
    /// SET_LOG_FD (7).
    case setLogFileDescriptor(VhostUserFileDescriptor)
    /// SET_VRING_NUM (8): `num` is the queue size (1…32768).
    case setVringNum(VhostUserVringState)
    /// SET_VRING_ADDR (9).
    case setVringAddress(VhostUserVringAddress)
    /// SET_VRING_BASE (10): `num` is the starting available index (its meaning is the ring format's).
    case setVringBase(VhostUserVringState)
    /// GET_VRING_BASE (11): `num` is ignored.
    case getVringBase(VhostUserVringState)
    /// SET_VRING_KICK (12).
    case setVringKick(VhostUserVringFile)
    /// SET_VRING_CALL (13).
    case setVringCall(VhostUserVringFile)
    /// SET_VRING_ERR (14).
    case setVringError(VhostUserVringFile)
    /// GET_PROTOCOL_FEATURES (15).
    case getProtocolFeatures
    /// SET_PROTOCOL_FEATURES (16).
    case setProtocolFeatures(VhostUserProtocolFeatures)
    /// GET_QUEUE_NUM (17).
    case getQueueNum
    /// SET_VRING_ENABLE (18): `num` is 0 or 1.
    case setVringEnable(VhostUserVringState)
    /// SEND_RARP (19): the guest's MAC in the low 6 bytes.
    case sendRARP(UInt64)
    /// NET_SET_MTU (20): at most 65535.
    case netSetMTU(UInt64)
    /// SET_BACKEND_REQ_FD (21).
    case setBackendRequestFileDescriptor(VhostUserFileDescriptor)
    /// SET_VRING_ENDIAN (23): `num` is 0 (little) or 1 (big).
    case setVringEndian(VhostUserVringState)
    /// GET_CONFIG (24): `bytes` holds as many bytes as the front-end wants to read.
    case getConfig(VhostUserConfigSpace)
    /// SET_CONFIG (25).
    case setConfig(VhostUserConfigSpace)
    /// GET_INFLIGHT_FD (31): the queue count and size the area must track.
    case getInflightFileDescriptor(VhostUserInflightDescription)
    /// SET_INFLIGHT_FD (32).
    case setInflightFileDescriptor(VhostUserInflightDescription, VhostUserFileDescriptor)
    /// RESET_DEVICE (34).
    case resetDevice
    /// VRING_KICK (35): `num` is 0.
    case vringKick(VhostUserVringState)
    /// GET_MAX_MEM_SLOTS (36).
    case getMaxMemorySlots
    /// ADD_MEM_REG (37).
    case addMemoryRegion(VhostUserMemoryRegion, VhostUserFileDescriptor)
    /// REM_MEM_REG (38): the region is named by guest address, user address and size.
    case removeMemoryRegion(VhostUserMemoryRegion)
    /// SET_STATUS (39): the virtio device status byte.
    case setStatus(UInt8)
    /// GET_STATUS (40).
    case getStatus
    /// A request this layer does not decode (IOTLB, crypto, postcopy, GPU, shared objects,
    /// device state, or a number the specification does not define). Refuse it.
    case unsupported(VhostUserRequest)

    /// The request type.
    public var request: VhostUserRequest {
        switch self {
        case .getFeatures: .getFeatures
        case .setFeatures: .setFeatures
        case .setOwner: .setOwner
        case .resetOwner: .resetOwner
        case .setMemoryTable: .setMemoryTable
        case .setLogBase: .setLogBase
        case .setLogFileDescriptor: .setLogFileDescriptor
        case .setVringNum: .setVringNum
        case .setVringAddress: .setVringAddress
        case .setVringBase: .setVringBase
        case .getVringBase: .getVringBase
        case .setVringKick: .setVringKick
        case .setVringCall: .setVringCall
        case .setVringError: .setVringError
        case .getProtocolFeatures: .getProtocolFeatures
        case .setProtocolFeatures: .setProtocolFeatures
        case .getQueueNum: .getQueueNum
        case .setVringEnable: .setVringEnable
        case .sendRARP: .sendRARP
        case .netSetMTU: .netSetMTU
        case .setBackendRequestFileDescriptor: .setBackendRequestFileDescriptor
        case .setVringEndian: .setVringEndian
        case .getConfig: .getConfig
        case .setConfig: .setConfig
        case .getInflightFileDescriptor: .getInflightFileDescriptor
        case .setInflightFileDescriptor: .setInflightFileDescriptor
        case .resetDevice: .resetDevice
        case .vringKick: .vringKick
        case .getMaxMemorySlots: .getMaxMemorySlots
        case .addMemoryRegion: .addMemoryRegion
        case .removeMemoryRegion: .removeMemoryRegion
        case .setStatus: .setStatus
        case .getStatus: .getStatus
        case .unsupported(let request): request
        }
    }

    /// Whether the request always has a reply (besides REPLY_ACK's): GET_FEATURES,
    /// GET_PROTOCOL_FEATURES, GET_VRING_BASE, GET_QUEUE_NUM, GET_CONFIG, GET_INFLIGHT_FD,
    /// GET_MAX_MEM_SLOTS, GET_STATUS.
    public var hasReply: Bool {
        switch self {
        case .getFeatures, .getProtocolFeatures, .getVringBase, .getQueueNum, .getConfig,
            .getInflightFileDescriptor, .getMaxMemorySlots, .getStatus:
            true
        default: false
        }
    }
}
