/// The vhost-user protocol feature bits (`VHOST_USER_PROTOCOL_F_*`), exchanged by
/// GET_PROTOCOL_FEATURES and SET_PROTOCOL_FEATURES once the virtio feature bit
/// ``VhostUserProtocolFeatures/virtioFeatureBit`` (30, `VHOST_USER_F_PROTOCOL_FEATURES`) is offered.
///
/// The set holds any 64-bit value: bits this layer does not name are kept, so a role can refuse them.
public struct VhostUserProtocolFeatures: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The virtio feature bit (30) by which a back-end says it speaks protocol features.
    public static let virtioFeatureBit: UInt64 = 1 << 30

    /// Bit 0: GET_QUEUE_NUM and several queues.
    public static let multipleQueues = Self(rawValue: 1 << 0)
    /// Bit 1: the dirty log is shared memory (SET_LOG_BASE carries an fd).
    public static let logSharedMemory = Self(rawValue: 1 << 1)
    /// Bit 2: SEND_RARP.
    public static let rarp = Self(rawValue: 1 << 2)
    /// Bit 3: NEED_REPLY on any request, answered by a u64 status.
    public static let replyAck = Self(rawValue: 1 << 3)
    /// Bit 4: NET_SET_MTU.
    public static let mtu = Self(rawValue: 1 << 4)
    /// Bit 5: SET_BACKEND_REQ_FD, a channel for back-end requests.
    public static let backendRequests = Self(rawValue: 1 << 5)
    /// Bit 6: SET_VRING_ENDIAN.
    public static let crossEndian = Self(rawValue: 1 << 6)
    /// Bit 7: crypto sessions.
    public static let cryptoSession = Self(rawValue: 1 << 7)
    /// Bit 8: postcopy migration (userfaultfd).
    public static let pageFault = Self(rawValue: 1 << 8)
    /// Bit 9: GET_CONFIG and SET_CONFIG.
    public static let config = Self(rawValue: 1 << 9)
    /// Bit 10: the back-end may send fds on its request channel.
    public static let backendSendFileDescriptors = Self(rawValue: 1 << 10)
    /// Bit 11: host notifiers.
    public static let hostNotifier = Self(rawValue: 1 << 11)
    /// Bit 12: GET_INFLIGHT_FD and SET_INFLIGHT_FD.
    public static let inflightSharedMemory = Self(rawValue: 1 << 12)
    /// Bit 13: RESET_DEVICE.
    public static let resetDevice = Self(rawValue: 1 << 13)
    /// Bit 14: in-band notifications (VRING_KICK).
    public static let inbandNotifications = Self(rawValue: 1 << 14)
    /// Bit 15: GET_MAX_MEM_SLOTS, ADD_MEM_REG and REM_MEM_REG.
    public static let configureMemorySlots = Self(rawValue: 1 << 15)
    /// Bit 16: SET_STATUS and GET_STATUS.
    public static let status = Self(rawValue: 1 << 16)
    /// Bit 17: Xen mmap (reserved in QEMU).
    public static let xenMmap = Self(rawValue: 1 << 17)
    /// Bit 18: shared objects.
    public static let sharedObject = Self(rawValue: 1 << 18)
    /// Bit 19: device state transfer (SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE).
    public static let deviceState = Self(rawValue: 1 << 19)

    static let names: [(UInt64, String)] = [
        (0, "MQ"), (1, "LOG_SHMFD"), (2, "RARP"), (3, "REPLY_ACK"), (4, "MTU"), (5, "BACKEND_REQ"),
        (6, "CROSS_ENDIAN"), (7, "CRYPTO_SESSION"), (8, "PAGEFAULT"), (9, "CONFIG"), (10, "BACKEND_SEND_FD"),
        (11, "HOST_NOTIFIER"), (12, "INFLIGHT_SHMFD"), (13, "RESET_DEVICE"), (14, "INBAND_NOTIFICATIONS"),
        (15, "CONFIGURE_MEM_SLOTS"), (16, "STATUS"), (17, "XEN_MMAP"), (18, "SHARED_OBJECT"),
        (19, "DEVICE_STATE"),
    ]

    /// The set bits by the specification's names (`bit N` for bits it does not name), joined by `|`.
    public var description: String {
        var parts: [String] = []
        for bit in 0..<64 where rawValue & (1 << UInt64(bit)) != 0 {
            parts.append(Self.names.first { $0.0 == UInt64(bit) }?.1 ?? "bit \(bit)")
        }
        return parts.isEmpty ? "[]" : parts.joined(separator: "|")
    }
}
