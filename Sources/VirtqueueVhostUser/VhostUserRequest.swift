/// A front-end request type: the `request` field of a vhost-user header, as numbered in QEMU's
/// `docs/interop/vhost-user.rst` ("Front-end message types").
///
/// A struct over the raw number rather than a closed enum: a peer may send any 32-bit value, and a
/// number this layer does not know still has to be represented (and refused by the role). Replies
/// carry the number of the request they answer.
public struct VhostUserRequest: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The number on the wire.
    public var rawValue: UInt32

    /// A request type from its number on the wire.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// `VHOST_USER_GET_FEATURES` (1): the virtio feature bits the back-end offers. Reply: u64.
    public static let getFeatures = VhostUserRequest(1)
    /// `VHOST_USER_SET_FEATURES` (2): the virtio feature bits the front-end accepts. Payload: u64.
    public static let setFeatures = VhostUserRequest(2)
    /// `VHOST_USER_SET_OWNER` (3): a session starts.
    public static let setOwner = VhostUserRequest(3)
    /// `VHOST_USER_RESET_OWNER` (4): deprecated; ignore or disable every ring.
    public static let resetOwner = VhostUserRequest(4)
    /// `VHOST_USER_SET_MEM_TABLE` (5): the guest memory, one fd per region.
    public static let setMemoryTable = VhostUserRequest(5)
    /// `VHOST_USER_SET_LOG_BASE` (6): the dirty-log area (live migration).
    public static let setLogBase = VhostUserRequest(6)
    /// `VHOST_USER_SET_LOG_FD` (7): an eventfd to signal that the log changed.
    public static let setLogFileDescriptor = VhostUserRequest(7)
    /// `VHOST_USER_SET_VRING_NUM` (8): a queue's size.
    public static let setVringNum = VhostUserRequest(8)
    /// `VHOST_USER_SET_VRING_ADDR` (9): a queue's ring addresses.
    public static let setVringAddress = VhostUserRequest(9)
    /// `VHOST_USER_SET_VRING_BASE` (10): a queue's starting available index.
    public static let setVringBase = VhostUserRequest(10)
    /// `VHOST_USER_GET_VRING_BASE` (11): stop a queue and report its index. Reply: vring state.
    public static let getVringBase = VhostUserRequest(11)
    /// `VHOST_USER_SET_VRING_KICK` (12): the eventfd the front-end kicks (or none: poll).
    public static let setVringKick = VhostUserRequest(12)
    /// `VHOST_USER_SET_VRING_CALL` (13): the eventfd the back-end signals (or none).
    public static let setVringCall = VhostUserRequest(13)
    /// `VHOST_USER_SET_VRING_ERR` (14): the eventfd the back-end signals on a ring error (or none).
    public static let setVringError = VhostUserRequest(14)
    /// `VHOST_USER_GET_PROTOCOL_FEATURES` (15). Reply: u64.
    public static let getProtocolFeatures = VhostUserRequest(15)
    /// `VHOST_USER_SET_PROTOCOL_FEATURES` (16). Payload: u64.
    public static let setProtocolFeatures = VhostUserRequest(16)
    /// `VHOST_USER_GET_QUEUE_NUM` (17): how many queues the back-end supports. Reply: u64.
    public static let getQueueNum = VhostUserRequest(17)
    /// `VHOST_USER_SET_VRING_ENABLE` (18): enable (1) or disable (0) a queue.
    public static let setVringEnable = VhostUserRequest(18)
    /// `VHOST_USER_SEND_RARP` (19): vhost-user-net; the guest's MAC in the first 6 bytes of a u64.
    public static let sendRARP = VhostUserRequest(19)
    /// `VHOST_USER_NET_SET_MTU` (20): vhost-user-net; the MTU in a u64.
    public static let netSetMTU = VhostUserRequest(20)
    /// `VHOST_USER_SET_BACKEND_REQ_FD` (21, formerly SET_SLAVE_REQ_FD): the back-end's request channel.
    public static let setBackendRequestFileDescriptor = VhostUserRequest(21)
    /// `VHOST_USER_IOTLB_MSG` (22): an IOTLB update or invalidation (VIRTIO_F_IOMMU_PLATFORM).
    public static let iotlbMessage = VhostUserRequest(22)
    /// `VHOST_USER_SET_VRING_ENDIAN` (23): a legacy queue's byte order.
    public static let setVringEndian = VhostUserRequest(23)
    /// `VHOST_USER_GET_CONFIG` (24): read the device config space. Reply: config space.
    public static let getConfig = VhostUserRequest(24)
    /// `VHOST_USER_SET_CONFIG` (25): write the device config space.
    public static let setConfig = VhostUserRequest(25)
    /// `VHOST_USER_CREATE_CRYPTO_SESSION` (26).
    public static let createCryptoSession = VhostUserRequest(26)
    /// `VHOST_USER_CLOSE_CRYPTO_SESSION` (27).
    public static let closeCryptoSession = VhostUserRequest(27)
    /// `VHOST_USER_POSTCOPY_ADVISE` (28).
    public static let postcopyAdvise = VhostUserRequest(28)
    /// `VHOST_USER_POSTCOPY_LISTEN` (29).
    public static let postcopyListen = VhostUserRequest(29)
    /// `VHOST_USER_POSTCOPY_END` (30).
    public static let postcopyEnd = VhostUserRequest(30)
    /// `VHOST_USER_GET_INFLIGHT_FD` (31): ask the back-end for an inflight-tracking area. Reply:
    /// inflight description and one fd.
    public static let getInflightFileDescriptor = VhostUserRequest(31)
    /// `VHOST_USER_SET_INFLIGHT_FD` (32): hand the inflight-tracking area back after a reconnect.
    public static let setInflightFileDescriptor = VhostUserRequest(32)
    /// `VHOST_USER_GPU_SET_SOCKET` (33).
    public static let gpuSetSocket = VhostUserRequest(33)
    /// `VHOST_USER_RESET_DEVICE` (34): disable every ring and reset the device.
    public static let resetDevice = VhostUserRequest(34)
    /// `VHOST_USER_VRING_KICK` (35): an in-band kick (INBAND_NOTIFICATIONS).
    public static let vringKick = VhostUserRequest(35)
    /// `VHOST_USER_GET_MAX_MEM_SLOTS` (36). Reply: u64.
    public static let getMaxMemorySlots = VhostUserRequest(36)
    /// `VHOST_USER_ADD_MEM_REG` (37): add one memory region, with its fd.
    public static let addMemoryRegion = VhostUserRequest(37)
    /// `VHOST_USER_REM_MEM_REG` (38): remove one memory region.
    public static let removeMemoryRegion = VhostUserRequest(38)
    /// `VHOST_USER_SET_STATUS` (39): the virtio device status byte.
    public static let setStatus = VhostUserRequest(39)
    /// `VHOST_USER_GET_STATUS` (40). Reply: u64.
    public static let getStatus = VhostUserRequest(40)
    /// `VHOST_USER_GET_SHARED_OBJECT` (41).
    public static let getSharedObject = VhostUserRequest(41)
    /// `VHOST_USER_SET_DEVICE_STATE_FD` (42).
    public static let setDeviceStateFileDescriptor = VhostUserRequest(42)
    /// `VHOST_USER_CHECK_DEVICE_STATE` (43).
    public static let checkDeviceState = VhostUserRequest(43)

    /// Every request type the specification defines, in number order.
    public static let allDefined: [VhostUserRequest] = (1...43).map { VhostUserRequest($0) }

    /// The specification's name, without the `VHOST_USER_` prefix, or `request(N)`.
    public var description: String {
        switch rawValue {
        case 1: "GET_FEATURES"
        case 2: "SET_FEATURES"
        case 3: "SET_OWNER"
        case 4: "RESET_OWNER"
        case 5: "SET_MEM_TABLE"
        case 6: "SET_LOG_BASE"
        case 7: "SET_LOG_FD"
        case 8: "SET_VRING_NUM"
        case 9: "SET_VRING_ADDR"
        case 10: "SET_VRING_BASE"
        case 11: "GET_VRING_BASE"
        case 12: "SET_VRING_KICK"
        case 13: "SET_VRING_CALL"
        case 14: "SET_VRING_ERR"
        case 15: "GET_PROTOCOL_FEATURES"
        case 16: "SET_PROTOCOL_FEATURES"
        case 17: "GET_QUEUE_NUM"
        case 18: "SET_VRING_ENABLE"
        case 19: "SEND_RARP"
        case 20: "NET_SET_MTU"
        case 21: "SET_BACKEND_REQ_FD"
        case 22: "IOTLB_MSG"
        case 23: "SET_VRING_ENDIAN"
        case 24: "GET_CONFIG"
        case 25: "SET_CONFIG"
        case 26: "CREATE_CRYPTO_SESSION"
        case 27: "CLOSE_CRYPTO_SESSION"
        case 28: "POSTCOPY_ADVISE"
        case 29: "POSTCOPY_LISTEN"
        case 30: "POSTCOPY_END"
        case 31: "GET_INFLIGHT_FD"
        case 32: "SET_INFLIGHT_FD"
        case 33: "GPU_SET_SOCKET"
        case 34: "RESET_DEVICE"
        case 35: "VRING_KICK"
        case 36: "GET_MAX_MEM_SLOTS"
        case 37: "ADD_MEM_REG"
        case 38: "REM_MEM_REG"
        case 39: "SET_STATUS"
        case 40: "GET_STATUS"
        case 41: "GET_SHARED_OBJECT"
        case 42: "SET_DEVICE_STATE_FD"
        case 43: "CHECK_DEVICE_STATE"
        default: "request(\(rawValue))"
        }
    }
}
