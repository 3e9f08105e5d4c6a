/// The bounds the message layer checks peer messages against.
///
/// The fixed bounds come from the specification and QEMU; the number of queues comes from the
/// device the role serves.
public struct VhostUserLimits: Hashable, Sendable {
    /// The most regions one SET_MEM_TABLE may carry: `VHOST_MEMORY_BASELINE_NREGIONS`, 8. QEMU
    /// never sends more (it switches to ADD_MEM_REG beyond that), and each region needs its own fd.
    public static let maxMemoryRegions = 8

    /// The most file descriptors one message may carry: 8, the memory table's (every other
    /// message carries at most one).
    public static let maxFileDescriptors = 8

    /// The largest device config space this layer accepts an access to: 256 bytes
    /// (QEMU's `VHOST_USER_MAX_CONFIG_SIZE`).
    public static let maxConfigSpaceSize = 256

    /// The largest queue size (SET_VRING_NUM, the inflight queue size): 32768, as virtio 1.x allows.
    public static let maxQueueSize = 32768

    /// The number of queues of the device: a vring index must be below it. 1…256, because the
    /// vring-file word of SET_VRING_KICK / CALL / ERR has 8 bits of index.
    public var queueCount: Int

    /// The size of the device's config space (GET_CONFIG / SET_CONFIG accesses must lie inside it),
    /// 0…256.
    public var configSpaceSize: Int

    /// The largest payload the layer reads: 4096 bytes. The largest payloads the layer decodes are
    /// a full memory table (8 + 8 × 32 = 264 bytes) and a config access (12 + 256 = 268 bytes);
    /// the bound leaves room for the payloads of messages it does not decode (which are read, so
    /// the stream stays in step, and refused) while keeping a hostile peer from making us allocate
    /// or wait for more. rust-vmm's vhost crate uses the same bound.
    public var maxPayloadSize: Int { 4096 }

    /// Limits for a device with `queueCount` queues and a config space of `configSpaceSize` bytes.
    ///
    /// - Precondition: `queueCount` is in 1…256 and `configSpaceSize` in 0…256 (caller input).
    public init(queueCount: Int = 1, configSpaceSize: Int = VhostUserLimits.maxConfigSpaceSize) {
        precondition((1...256).contains(queueCount), "queueCount \(queueCount) is not in 1...256")
        precondition(
            (0...Self.maxConfigSpaceSize).contains(configSpaceSize),
            "configSpaceSize \(configSpaceSize) is not in 0...256"
        )
        self.queueCount = queueCount
        self.configSpaceSize = configSpaceSize
    }
}
