import CVirtqueueSystem
import Glibc
public import SystemPackage
public import Virtqueue

/// The front-end role of vhost-user: our side owns the memory and drives the queues, a back-end
/// in another program — qemu-storage-daemon, a DPDK vhost port, our own `VhostUserBlock` — serves
/// them.
///
/// ```swift
/// let frontEnd = try VhostUserFrontEnd.connect(to: "/tmp/vub.sock")
/// let features = try frontEnd.negotiate(wanted: .all.union(blockFeatures))
/// let memory = try VhostUserFrontEndMemory(regions: [.init(guestPhysicalAddress: 0, size: 4 << 20)])
/// try frontEnd.setMemoryTable(memory)
/// let notifier = try frontEnd.startRing(0, placement: placement, memory: memory)
/// var driver = try DriverQueue(memory: memory, placement: placement, notifier: notifier,
///                              features: features, pool: pool, bufferSize: 4096)
/// ```
///
/// Everything the back-end sends is peer input: each reply is decoded and validated by the
/// message layer (the right request, the right size, no stray descriptors), and its values are
/// checked here — features it offers that we did not ask for are not acked, a queue count outside
/// 1…256, a config reply for other bytes than asked, a REPLY_ACK that refuses: each is a typed
/// ``VhostUserError`` naming the value. Each ring's notifier also watches the connection, so a
/// back-end that dies ends every wait with ``Virtqueue/VirtqueueError/Code-swift.struct/peerDied``;
/// the driver then takes back its chains in flight (``Virtqueue/DriverQueue/takeAbandoned()``).
public final class VhostUserFrontEnd {
    /// The connection.
    public let socket: VhostUserSocket
    /// How long a reply may take.
    public let replyTimeout: Duration
    /// The virtio features acked (SET_FEATURES), without bit 30.
    public private(set) var features: Features = []
    /// The protocol features acked (SET_PROTOCOL_FEATURES).
    public private(set) var protocolFeatures: VhostUserProtocolFeatures = []
    /// The back-end's queue count (GET_QUEUE_NUM with MQ, else 1).
    public private(set) var queueCount = 1
    /// Each started ring's eventfds (ours: we made them) and placement, by index.
    private var rings: [Int: StartedRing] = [:]

    /// What the front-end keeps of a started ring.
    private struct StartedRing {
        var kick: VhostUserFileDescriptor
        var call: VhostUserFileDescriptor
        var placement: QueuePlacement
    }
    let limits = VhostUserLimits(queueCount: 256)

    /// A front-end on a connected socket.
    public init(socket: VhostUserSocket, replyTimeout: Duration = .seconds(10)) {
        self.socket = socket
        self.replyTimeout = replyTimeout
    }

    /// Connects to the back-end listening at `path`.
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/systemCallFailed`` if nothing listens there.
    public static func connect(to path: FilePath, replyTimeout: Duration = .seconds(10)) throws(VhostUserError)
        -> VhostUserFrontEnd
    {
        VhostUserFrontEnd(socket: try VhostUserSocket.connect(to: path), replyTimeout: replyTimeout)
    }

    // MARK: Messages

    /// Sends a request that has a reply of its own and returns the reply, validated.
    func request(_ message: VhostUserMessage) throws(VhostUserError) -> VhostUserReply {
        try socket.send(try message.encode(), timeout: replyTimeout)
        let frame = try socket.receive(expectingReply: true, limits: limits, idleTimeout: replyTimeout)
        return try frame.decodeReply(to: message.request, limits: limits)
    }

    func requestU64(_ message: VhostUserMessage) throws(VhostUserError) -> UInt64 {
        guard case .u64(let value) = try request(message) else {
            throw VhostUserError(.unexpectedReply, "\(message.request): the reply is not a u64")
        }
        return value
    }

    /// Sends a request without a reply of its own; with REPLY_ACK negotiated it asks for the ack
    /// and fails if the back-end refused.
    func send(_ message: VhostUserMessage) throws(VhostUserError) {
        let ack = protocolFeatures.contains(.replyAck)
        try socket.send(try message.encode(needsReply: ack), timeout: replyTimeout)
        guard ack else { return }
        let frame = try socket.receive(expectingReply: true, limits: limits, idleTimeout: replyTimeout)
        guard case .u64(let status) = try frame.decodeReply(to: message.request, limits: limits) else {
            throw VhostUserError(.unexpectedReply, "\(message.request): the REPLY_ACK is not a u64")
        }
        guard status == 0 else {
            throw VhostUserError(.refusedByPeer, "the back-end refused \(message.request) (REPLY_ACK status \(status))")
        }
    }

    // MARK: Set-up

    /// The opening sequence: GET_FEATURES, SET_OWNER, the protocol features when offered
    /// (GET / SET_PROTOCOL_FEATURES, then GET_QUEUE_NUM with MQ), and SET_FEATURES.
    ///
    /// - Parameters:
    ///   - wanted: The virtio features the driver can use; VERSION_1 is always asked for.
    ///     VIRTIO_F_RING_PACKED in it is ignored: `ringFormat` decides.
    ///   - protocol: The protocol features wanted; REPLY_ACK, CONFIG and MQ by default. Only those
    ///     the back-end offers are acked.
    ///   - ringFormat: The ring format of every queue: with ``Virtqueue/RingFormat/packed``,
    ///     VIRTIO_F_RING_PACKED (bit 34) is acked and must be offered; with the split ring it never is.
    /// - Returns: The features acked: `wanted` ∩ what the back-end offered (bit 30 aside).
    /// - Throws: ``VhostUserError/Code-swift.struct/featureNotOffered`` if the back-end does not
    ///   offer VERSION_1, or RING_PACKED for a packed `ringFormat`;
    ///   ``VhostUserError/Code-swift.struct/invalidValue`` for a queue count outside 1…256; what
    ///   the exchange throws.
    @discardableResult
    public func negotiate(
        wanted: Features,
        protocol wantedProtocol: VhostUserProtocolFeatures = [.replyAck, .config, .multipleQueues],
        ringFormat: RingFormat = .split
    ) throws(VhostUserError) -> Features {
        let offered = try requestU64(.getFeatures)
        for (feature, name) in [(Features.version1, "VERSION_1"), (.ringPacked, "RING_PACKED")]
        where offered & feature.rawValue == 0 && (feature == .version1 || ringFormat == .packed) {
            throw VhostUserError(
                .featureNotOffered,
                "the back-end does not offer \(name) (offered 0x\(String(offered, radix: 16)))"
            )
        }
        try socket.send(try VhostUserMessage.setOwner.encode(), timeout: replyTimeout)
        var chosen = wanted.union(.version1).subtracting(.ringPacked)
        if ringFormat == .packed { chosen.insert(.ringPacked) }
        var ack = chosen.rawValue & offered & ~VhostUserProtocolFeatures.virtioFeatureBit
        if offered & VhostUserProtocolFeatures.virtioFeatureBit != 0 {
            let offeredProtocol = VhostUserProtocolFeatures(rawValue: try requestU64(.getProtocolFeatures))
            let chosenProtocol = offeredProtocol.intersection(wantedProtocol)
            try socket.send(try VhostUserMessage.setProtocolFeatures(chosenProtocol).encode(), timeout: replyTimeout)
            protocolFeatures = chosenProtocol
            if chosenProtocol.contains(.multipleQueues) {
                let count = try requestU64(.getQueueNum)
                guard (1...256).contains(count) else {
                    throw VhostUserError(.invalidValue, "GET_QUEUE_NUM: the back-end reports \(count) queues")
                }
                queueCount = Int(count)
            }
            ack |= VhostUserProtocolFeatures.virtioFeatureBit
        }
        try send(.setFeatures(ack))
        features = Features(rawValue: ack & ~VhostUserProtocolFeatures.virtioFeatureBit)
        return features
    }

    /// Sends the memory table (SET_MEM_TABLE) of `memory`.
    public func setMemoryTable(_ memory: VhostUserFrontEndMemory) throws(VhostUserError) {
        try send(.setMemoryTable(memory.table))
    }

    /// Reads `count` bytes of the device's config space at `offset` (GET_CONFIG; needs CONFIG).
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidConfigAccess`` if the back-end answers
    ///   with other bytes than asked (an empty reply is its failure report).
    public func config(offset: Int = 0, count: Int) throws(VhostUserError) -> [UInt8] {
        guard protocolFeatures.contains(.config) else {
            throw VhostUserError(.featureNotOffered, "GET_CONFIG needs the protocol feature CONFIG, not negotiated")
        }
        let asked = VhostUserConfigSpace(offset: UInt32(offset), bytes: [UInt8](repeating: 0, count: count))
        guard case .config(let reply) = try request(.getConfig(asked)) else {
            throw VhostUserError(.unexpectedReply, "GET_CONFIG: the reply is not a config space")
        }
        guard reply.offset == UInt32(offset), reply.bytes.count == count else {
            throw VhostUserError(
                .invalidConfigAccess,
                "GET_CONFIG: asked for \(count) bytes at \(offset), the back-end answered \(reply.bytes.count) at \(reply.offset)"
            )
        }
        return reply.bytes
    }

    /// Sets ring `index` up and starts it: SET_VRING_NUM, BASE (the placement's cursor), ADDR
    /// (translated to this process's addresses), CALL and KICK (eventfds made here), and ENABLE
    /// when the protocol features were negotiated.
    ///
    /// A packed placement (``Virtqueue/RingFormat/packed``; VIRTIO_F_RING_PACKED must have been
    /// negotiated) sends its descriptor ring as `desc`, the driver event suppression structure as
    /// `avail` and the device's as `used`, and both positions of its cursor as the base
    /// (``VhostUserVringBase``).
    ///
    /// - Returns: The driver's notifier: it kicks the back-end, waits for its calls, and ends a
    ///   wait with `peerDied` when the connection closes.
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidArgument`` for an index outside the
    ///   back-end's queues, an area outside `memory`, or a placement whose format the features
    ///   did not negotiate; what the exchange throws.
    public func startRing(
        _ index: Int,
        placement: QueuePlacement,
        memory: VhostUserFrontEndMemory
    ) throws(VhostUserError) -> VhostUserEventNotifier {
        guard (0..<queueCount).contains(index) else {
            throw VhostUserError(.invalidArgument, "queue \(index) is not below the back-end's \(queueCount) queues")
        }
        guard (placement.format == .packed) == features.contains(.ringPacked) else {
            throw VhostUserError(
                .invalidArgument,
                "queue \(index): a \(placement.format) placement, but the features negotiated "
                    + "\(features.contains(.ringPacked) ? "" : "no ")RING_PACKED"
            )
        }
        var user: [UInt64] = []
        for (area, range) in zip(placement.format.areas(size: placement.size), placement.areas) {
            let count = UInt64(area.byteCount)
            guard let start = memory.userAddress(of: range.range.lowerBound),
                memory.userAddress(of: range.range.lowerBound &+ count &- 1) == start &+ count &- 1
            else {
                throw VhostUserError(
                    .invalidArgument,
                    "queue \(index): the \(area.name) at \(hex(range.range.lowerBound)) is not in the memory"
                )
            }
            user.append(start)
        }
        let kickFD = vq_eventfd()
        guard kickFD >= 0 else { throw .system("eventfd", Errno(rawValue: errno)) }
        let kick = VhostUserFileDescriptor(owning: kickFD)
        let callFD = vq_eventfd()
        guard callFD >= 0 else { throw .system("eventfd", Errno(rawValue: errno)) }
        let call = VhostUserFileDescriptor(owning: callFD)
        let queue = UInt32(index)
        try send(.setVringNum(VhostUserVringState(index: queue, num: UInt32(placement.size))))
        let base = VhostUserVringBase.encode(placement.cursor, format: placement.format)
        try send(.setVringBase(VhostUserVringState(index: queue, num: base)))
        try send(
            .setVringAddress(
                VhostUserVringAddress(index: queue, descriptor: user[0], used: user[2], available: user[1])
            )
        )
        try send(.setVringCall(VhostUserVringFile(index: UInt8(index), fileDescriptor: call)))
        try send(.setVringKick(VhostUserVringFile(index: UInt8(index), fileDescriptor: kick)))
        if !protocolFeatures.isEmpty || features.rawValue != 0 {
            try send(.setVringEnable(VhostUserVringState(index: queue, num: 1)))
        }
        rings[index] = StartedRing(kick: kick, call: call, placement: placement)
        return try VhostUserEventNotifier(waitingOn: call, notifying: kick, watching: socket.fileDescriptor)
    }

    /// Stops ring `index` (GET_VRING_BASE) and returns the back-end's next available index — for
    /// a packed ring, its available position with the wrap counter in bit 15
    /// (``Virtqueue/PackedRingPosition/cursorValue``).
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidValue`` if the reply names another
    ///   queue, or a base the ring's format does not allow (``VhostUserVringBase/decode(_:format:size:context:)``);
    ///   what the exchange throws.
    public func stopRing(_ index: Int) throws(VhostUserError) -> UInt16 {
        guard
            case .vringState(let state) = try request(.getVringBase(VhostUserVringState(index: UInt32(index), num: 0)))
        else { throw VhostUserError(.unexpectedReply, "GET_VRING_BASE: the reply is not a vring state") }
        guard state.index == UInt32(index) else {
            throw VhostUserError(
                .invalidValue,
                "GET_VRING_BASE: asked for queue \(index), the back-end answered queue \(state.index) base \(state.num)"
            )
        }
        let placement = rings[index]?.placement
        let cursor = try VhostUserVringBase.decode(
            state.num,
            format: placement?.format ?? (features.contains(.ringPacked) ? .packed : .split),
            size: placement?.size,
            context: "GET_VRING_BASE: queue \(index)"
        )
        rings[index] = nil
        return cursor.nextAvailable
    }

    /// Closes the connection (both directions): the back-end stops its rings.
    public func close() {
        _ = shutdown(socket.fileDescriptor.rawValue, CInt(SHUT_RDWR))
    }
}
