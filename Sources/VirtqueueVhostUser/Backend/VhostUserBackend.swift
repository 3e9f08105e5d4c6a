public import Virtqueue

/// The vhost-user back-end role: serves a front-end (QEMU, or any other) the rings of a
/// ``VhostUserDevice``, the same `DeviceComponent` that runs on a thread, in a child process or in
/// the sandbox.
///
/// The front-end hands over its guest memory (SET_MEM_TABLE, ADD_MEM_REG), the rings' sizes,
/// addresses and starting indices (SET_VRING_NUM / ADDR / BASE) and eventfds (SET_VRING_KICK /
/// CALL / ERR). When a ring has all it needs, the back-end builds a ``Virtqueue/DeviceQueue`` on a
/// ``VhostUserMemory`` shared by every ring and serves it with the device on a thread of its own;
/// GET_VRING_BASE stops it and reports where it stands.
///
/// ```swift
/// let backend = try VhostUserBackend<Uppercase>(log: { print($0) })
/// try backend.serve(connection: socket)   // until the front-end hangs up
/// ```
///
/// Every message is peer input: a refused one is answered as the specification says (a
/// REPLY_ACK with a non-zero status when the front-end set NEED_REPLY; the connection closed for
/// a framing error) and logged with a typed ``VhostUserError`` that names the value. Nothing a
/// front-end sends makes the back-end trap, and after a connection ends — cleanly or not — the
/// same back-end serves the next one. The rules are listed in `docs/vhost-user.md`.
public final class VhostUserBackend<Device: VhostUserDevice>: Sendable {
    /// What every device value is created with.
    public let configuration: DeviceConfiguration
    /// The bounds and timeouts.
    public let options: VhostUserBackendOptions
    /// The device's config space, as each connection starts with it.
    public let configSpace: [UInt8]
    let log: VhostUserLogSink

    /// Creates a back-end for `Device`.
    ///
    /// - Parameters:
    ///   - configuration: What each device value is created with
    ///     (``Virtqueue/DeviceComponent/init(configuration:)``) and its config space is computed from.
    ///   - options: Bounds and timeouts.
    ///   - log: Where log records go; the default drops them.
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidArgument`` if the device's queue count
    ///   is not in 1…256 or its config space is above 256 bytes;
    ///   ``VhostUserError/Code-swift.struct/deviceFailed`` if computing the config space threw.
    public init(
        configuration: DeviceConfiguration = DeviceConfiguration(),
        options: VhostUserBackendOptions = VhostUserBackendOptions(),
        log: @escaping VhostUserLogSink = { _ in }
    ) throws(VhostUserError) {
        guard (1...256).contains(Device.queueCount) else {
            throw VhostUserError(.invalidArgument, "\(Device.name): queue count \(Device.queueCount) is not in 1...256")
        }
        let space: [UInt8]
        do {
            space = try Device.configSpace(for: configuration)
        } catch {
            throw VhostUserError(.deviceFailed, "\(Device.name): its config space could not be computed: \(error)")
        }
        guard space.count <= VhostUserLimits.maxConfigSpaceSize else {
            throw VhostUserError(
                .invalidArgument,
                "\(Device.name): a config space of \(space.count) bytes is above the bound of 256"
            )
        }
        guard options.maxMemorySlots >= 1 else {
            throw VhostUserError(.invalidArgument, "max memory slots \(options.maxMemorySlots) is below 1")
        }
        self.configuration = configuration
        self.options = options
        self.configSpace = space
        self.log = log
    }

    /// The virtio features offered (GET_FEATURES): the ring core's implemented transport bits that
    /// the device supports, its device-type bits, VERSION_1, RING_PACKED when the ring core runs
    /// the packed ring (the ring format is the core's, not the device code's: every device runs on
    /// either), and `VHOST_USER_F_PROTOCOL_FEATURES` (bit 30).
    public var offeredFeatures: UInt64 {
        let device = Device.supportedFeatures.intersection(Features.implementedTransport.union(.deviceType))
        let core = Features.implementedTransport.intersection([.version1, .ringPacked])
        return device.union(core).rawValue | VhostUserProtocolFeatures.virtioFeatureBit
    }

    /// The protocol features offered (GET_PROTOCOL_FEATURES): MQ, REPLY_ACK, CONFIG,
    /// INFLIGHT_SHMFD and CONFIGURE_MEM_SLOTS.
    public var offeredProtocolFeatures: VhostUserProtocolFeatures {
        [.multipleQueues, .replyAck, .config, .inflightSharedMemory, .configureMemorySlots]
    }

    /// The bounds the message layer checks this device's messages against.
    public var limits: VhostUserLimits {
        VhostUserLimits(queueCount: Device.queueCount, configSpaceSize: configSpace.count)
    }

    /// Serves one connection until the front-end closes it, then stops every ring and releases
    /// the guest memory. Blocks the calling thread; each ring is served on a thread of its own.
    ///
    /// - Parameter socket: The connected socket.
    /// - Throws: The ``VhostUserError`` that made the back-end close the connection (a framing
    ///   violation, a reply that could not be sent, a ring that did not stop); it is logged too.
    ///   A front-end hanging up between messages is a normal end.
    public func serve(connection socket: VhostUserSocket) throws(VhostUserError) {
        var session = VhostUserSession<Device>(backend: self, socket: socket)
        try session.run()
    }
}
