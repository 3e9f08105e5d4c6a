import Virtqueue

/// One connection of a ``VhostUserBackend``: the session state and the message loop.
///
/// State rules (also in `docs/vhost-user.md`):
/// - A ring *runs* from the moment it has a size, addresses, a base, a kick (an eventfd, or the
///   no-fd flag for polling), is enabled, and there is a memory table — until GET_VRING_BASE,
///   SET_VRING_ENABLE 0, a ring violation or the end of the connection.
/// - While any ring runs: SET_MEM_TABLE, ADD_MEM_REG and REM_MEM_REG are refused (a
///   ``Virtqueue/GuestMemory`` never changes under a queue); SET_VRING_NUM / ADDR / BASE on that
///   ring are refused; SET_FEATURES may only repeat the features acked.
/// - SET_VRING_CALL and SET_VRING_ERR take effect at once, also on a running ring;
///   SET_VRING_KICK on a running ring restarts it from where it stands.
struct VhostUserSession<Device: VhostUserDevice> {
    let backend: VhostUserBackend<Device>
    let socket: VhostUserSocket
    let limits: VhostUserLimits

    /// The virtio features the front-end acked (SET_FEATURES), bit 30 included.
    var features: UInt64?
    /// The protocol features the front-end acked (SET_PROTOCOL_FEATURES).
    var protocolFeatures: VhostUserProtocolFeatures = []
    var memory: VhostUserMemory?
    /// What the connection's device values share, made when its first ring starts.
    var shared: Device.SharedState?
    /// The inflight area (GET_INFLIGHT_FD / SET_INFLIGHT_FD), when the front-end uses one.
    var inflight: VhostUserInflightArea?
    /// Whether this connection created the inflight area (GET_INFLIGHT_FD) rather than only
    /// adopted one a front-end kept from an earlier back-end (SET_INFLIGHT_FD alone: QEMU
    /// reconnecting after its back-end went away).
    var inflightCreatedHere = false
    var config: [UInt8]
    var rings: [Ring]

    /// What the session holds for one ring.
    struct Ring {
        var size: Int?
        var address: VhostUserVringAddress?
        /// SET_VRING_BASE's number, as sent (``VhostUserVringBase``), or where the ring stopped.
        var base: UInt32?
        var kick: Kick = .unset
        var call: VhostUserFileDescriptor?
        var error: VhostUserFileDescriptor?
        /// SET_VRING_ENABLE's last word; `nil` until the first one.
        var enabled: Bool?
        /// The device value of this ring, between runs.
        var device: Device?
        var runner: RingRunner<Device>?
        /// Requests the ring completed in this connection, over all its runs.
        var served = 0
    }

    /// A ring's kick, as SET_VRING_KICK set it.
    enum Kick {
        case unset
        /// The no-fd flag: the back-end polls the ring.
        case polling
        case eventfd(VhostUserFileDescriptor)
    }

    /// What a handled request answers.
    enum Response {
        /// Nothing of its own (a REPLY_ACK if the front-end asked).
        case done
        /// Its own reply.
        case reply(VhostUserReply)
    }

    init(backend: VhostUserBackend<Device>, socket: VhostUserSocket) {
        self.backend = backend
        self.socket = socket
        self.limits = backend.limits
        self.config = backend.configSpace
        self.rings = Array(repeating: Ring(), count: Device.queueCount)
    }

    // MARK: The loop

    mutating func run() throws(VhostUserError) {
        log(.info, "connection opened (\(Device.name), \(Device.queueCount) queues)")
        defer { stopAllRings() }
        while true {
            let frame: VhostUserFrame
            do {
                frame = try socket.receive(
                    limits: limits,
                    idleTimeout: backend.options.idleTimeout,
                    messageTimeout: backend.options.messageTimeout
                )
            } catch {
                if error.code == .peerClosed {
                    log(.info, "the front-end closed the connection")
                    return
                }
                // A framing violation: the stream cannot be trusted any more.
                log(.error, "closing the connection", error: error)
                throw error
            }
            let header = frame.header
            reapEndedRings()
            do {
                let decoded = try frame.decodeRequest(limits: limits)
                log(.debug, "\(header.request)")
                let response = try handle(decoded.message)
                try respond(response, to: header)
            } catch {
                if error.code == .ringDidNotStop || error.code == .peerClosed || error.code == .timedOut {
                    log(.error, "closing the connection", error: error)
                    throw error
                }
                try refuse(header, error)
            }
        }
    }

    func respond(_ response: Response, to header: VhostUserHeader) throws(VhostUserError) {
        switch response {
        case .reply(let reply):
            try send(reply, answering: header.request)
        case .done:
            if header.needsReply && protocolFeatures.contains(.replyAck) {
                try send(.ack(success: true), answering: header.request)
            }
        }
    }

    /// Answers a refused request as the specification says: a failed REPLY_ACK if the front-end
    /// asked for one; an empty config for GET_CONFIG; for another request with a reply of its own
    /// (which the front-end is waiting for and no value of which says "failed"), the connection
    /// is closed.
    func refuse(_ header: VhostUserHeader, _ error: VhostUserError) throws(VhostUserError) {
        log(.warning, "refused \(header.request)", error: error)
        if header.request == .getConfig {
            try send(.config(VhostUserConfigSpace(offset: 0, bytes: [])), answering: header.request)
        } else if Self.hasOwnReply(header.request) {
            log(.error, "closing the connection: \(header.request) has a reply that cannot say it failed")
            throw error
        } else if header.needsReply && protocolFeatures.contains(.replyAck) {
            try send(.ack(success: false), answering: header.request)
        }
    }

    /// Requests the front-end waits for a reply to, whatever it negotiated.
    static func hasOwnReply(_ request: VhostUserRequest) -> Bool {
        [
            .getFeatures, .getProtocolFeatures, .getVringBase, .getQueueNum, .getConfig,
            .getInflightFileDescriptor, .getMaxMemorySlots, .getStatus,
        ]
        .contains(request)
    }

    func send(_ reply: VhostUserReply, answering request: VhostUserRequest) throws(VhostUserError) {
        try socket.send(try reply.encode(answering: request), timeout: backend.options.messageTimeout)
    }

    func log(_ level: VhostUserLogRecord.Level, _ message: String, error: VhostUserError? = nil, queue: Int? = nil) {
        backend.log(VhostUserLogRecord(level: level, message, error: error, queue: queue))
    }

    // MARK: Requests

    mutating func handle(_ message: VhostUserMessage) throws(VhostUserError) -> Response {
        switch message {
        case .getFeatures:
            return .reply(.u64(backend.offeredFeatures))
        case .setFeatures(let value):
            try setFeatures(value)
        case .getProtocolFeatures:
            return .reply(.u64(backend.offeredProtocolFeatures.rawValue))
        case .setProtocolFeatures(let value):
            let unoffered = value.subtracting(backend.offeredProtocolFeatures)
            guard unoffered.isEmpty else {
                throw VhostUserError(
                    .featureNotOffered,
                    "SET_PROTOCOL_FEATURES: \(unoffered) (0x\(String(unoffered.rawValue, radix: 16))) were not offered"
                )
            }
            protocolFeatures = value
        case .setOwner:
            break
        case .resetOwner:
            log(.notice, "RESET_OWNER is deprecated; ignored, as the specification allows")
        case .setMemoryTable(let table):
            try requireNoRunningRing("SET_MEM_TABLE")
            let new = try VhostUserMemory(table: table)
            try checkSeals(new, "SET_MEM_TABLE")
            memory = new
            log(.info, "memory table: \(describe(new))")
        case .addMemoryRegion(let region, let descriptor):
            try requireProtocolFeature(.configureMemorySlots, "ADD_MEM_REG")
            try requireNoRunningRing("ADD_MEM_REG")
            let current = memory ?? .empty()
            guard current.regions.count < backend.options.maxMemorySlots else {
                throw VhostUserError(
                    .regionCount,
                    "ADD_MEM_REG: all \(backend.options.maxMemorySlots) memory slots are in use"
                )
            }
            let new = try current.adding(region, fileDescriptor: descriptor)
            try checkSeals(new, "ADD_MEM_REG")
            memory = new
            log(.info, "memory region added: \(describe(new))")
        case .removeMemoryRegion(let region):
            try requireProtocolFeature(.configureMemorySlots, "REM_MEM_REG")
            try requireNoRunningRing("REM_MEM_REG")
            let new = try (memory ?? .empty()).removing(region)
            memory = new.regions.isEmpty ? nil : new
        case .getMaxMemorySlots:
            return .reply(.u64(UInt64(backend.options.maxMemorySlots)))
        case .getQueueNum:
            return .reply(.u64(UInt64(Device.queueCount)))
        case .setVringNum(let state):
            let index = Int(state.index)
            try requireStopped(index, "SET_VRING_NUM")
            // The message layer checked 1…32768; the split ring also needs a power of two.
            do {
                try ringFormat.validate(size: Int(state.num))
            } catch {
                throw VhostUserError(.invalidValue, "SET_VRING_NUM: queue \(index): \(error.message)")
            }
            rings[index].size = Int(state.num)
        case .setVringAddress(let address):
            try setVringAddress(address)
        case .setVringBase(let state):
            let index = Int(state.index)
            try requireStopped(index, "SET_VRING_BASE")
            _ = try VhostUserVringBase.decode(
                state.num,
                format: ringFormat,
                size: rings[index].size,
                context: "SET_VRING_BASE: queue \(index)"
            )
            rings[index].base = state.num
        case .getVringBase(let state):
            let index = Int(state.index)
            let base = try stopRing(index, reason: "GET_VRING_BASE") ?? rings[index].base ?? 0
            // The ring is stopped; a new SET_VRING_KICK starts it again (the call and error
            // eventfds stay, as QEMU expects).
            rings[index].kick = .unset
            return .reply(.vringState(VhostUserVringState(index: state.index, num: base)))
        case .setVringKick(let file):
            let index = Int(file.index)
            rings[index].kick = file.fileDescriptor.map { .eventfd($0) } ?? .polling
            if rings[index].runner != nil {
                _ = try stopRing(index, reason: "a new kick")
            }
            try startIfReady(index)
        case .setVringCall(let file):
            let index = Int(file.index)
            rings[index].call = file.fileDescriptor
            rings[index].runner?.notifier.replaceNotifyTarget(file.fileDescriptor)
        case .setVringError(let file):
            let index = Int(file.index)
            rings[index].error = file.fileDescriptor
            rings[index].runner?.replaceErrorTarget(file.fileDescriptor)
        case .setVringEnable(let state):
            let index = Int(state.index)
            rings[index].enabled = state.num == 1
            if state.num == 0 {
                _ = try stopRing(index, reason: "SET_VRING_ENABLE 0")
            } else {
                try startIfReady(index)
            }
        case .getInflightFileDescriptor(let request):
            try requireProtocolFeature(.inflightSharedMemory, "GET_INFLIGHT_FD")
            let area = try VhostUserInflightArea.create(for: request)
            inflight = area
            inflightCreatedHere = true
            log(
                .info,
                "inflight area created: \(area.description.mmapSize) bytes for \(request.queueCount) queues of \(request.queueSize)"
            )
            return .reply(.inflight(area.description, area.fileDescriptor))
        case .setInflightFileDescriptor(let description, let descriptor):
            try requireProtocolFeature(.inflightSharedMemory, "SET_INFLIGHT_FD")
            try requireNoRunningRing("SET_INFLIGHT_FD")
            inflight = try VhostUserInflightArea.adopt(description, descriptor)
            log(
                .info,
                "inflight area adopted: \(description.mmapSize) bytes for \(description.queueCount) queues of \(description.queueSize)"
            )
        case .getConfig(let access):
            // The message layer checked that offset + size lies inside the config space.
            let start = Int(access.offset)
            let bytes = Array(config[start..<start + access.size])
            return .reply(.config(VhostUserConfigSpace(offset: access.offset, flags: access.flags, bytes: bytes)))
        case .setConfig(let access):
            try requireProtocolFeature(.config, "SET_CONFIG")
            let range = Int(access.offset)..<Int(access.offset) + access.size
            let writable = Device.writableConfigBytes
            guard range.lowerBound >= writable.lowerBound, range.upperBound <= writable.upperBound else {
                throw VhostUserError(
                    .invalidConfigAccess,
                    "SET_CONFIG: bytes \(range) of the config space are not writable (writable: \(writable))"
                )
            }
            config.replaceSubrange(range, with: access.bytes)
        default:
            throw VhostUserError(.requestNotSupported, Self.whyNotSupported(message.request))
        }
        return .done
    }

    /// Why the back-end refuses a request it does not implement.
    static func whyNotSupported(_ request: VhostUserRequest) -> String {
        let reason =
            switch request {
            case .setLogBase, .setLogFileDescriptor:
                "live migration's dirty log is not supported (LOG_SHMFD and VHOST_F_LOG_ALL are not offered)"
            case .setBackendRequestFileDescriptor: "the back-end request channel (BACKEND_REQ) is not offered"
            case .sendRARP, .netSetMTU: "a net device's request; RARP and MTU are not offered"
            case .setVringEndian: "legacy (non-VERSION_1) rings are not supported"
            case .resetDevice: "RESET_DEVICE is not offered"
            case .vringKick: "in-band notifications are not offered"
            case .setStatus, .getStatus: "STATUS is not offered"
            default: "the back-end does not implement it"
            }
        return "\(request): \(reason)"
    }

    mutating func setFeatures(_ value: UInt64) throws(VhostUserError) {
        let unoffered = value & ~backend.offeredFeatures
        guard unoffered == 0 else {
            throw VhostUserError(
                .featureNotOffered,
                "SET_FEATURES: \(Features(rawValue: unoffered)) (0x\(String(unoffered, radix: 16))) were not offered"
            )
        }
        if value != features, let running = runningRings().first {
            throw VhostUserError(
                .invalidState,
                "SET_FEATURES: the features cannot change while queue \(running) runs "
                    + "(acked \(hex(features ?? 0)), asked \(hex(value)))"
            )
        }
        features = value
    }

    mutating func setVringAddress(_ address: VhostUserVringAddress) throws(VhostUserError) {
        let index = Int(address.index)
        try requireStopped(index, "SET_VRING_ADDR")
        guard let memory else {
            throw VhostUserError(
                .invalidState,
                "SET_VRING_ADDR: queue \(index) addresses came before any memory table, so they cannot be translated"
            )
        }
        _ = try ringAreas(address, queue: index, size: rings[index].size ?? 1, in: memory, request: "SET_VRING_ADDR: ")
        rings[index].address = address
    }

    /// The ring format the acked features choose: packed with VIRTIO_F_RING_PACKED (bit 34),
    /// split otherwise.
    var ringFormat: RingFormat {
        (features ?? 0) & Features.ringPacked.rawValue != 0 ? .packed : .split
    }

    /// The guest-physical addresses of ring `index`'s three areas (descriptor, driver, device),
    /// SET_VRING_ADDR's user addresses translated, each area — its size per ``ringFormat`` and
    /// `size` (``Virtqueue/RingFormat/areas(size:)``) — inside one region.
    ///
    /// For the packed ring the vring address's `desc` is the descriptor ring, `avail` the driver
    /// event suppression structure and `used` the device's (QEMU's and DPDK's reading).
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/unmappedRingAddress`` naming the area.
    func ringAreas(
        _ address: VhostUserVringAddress,
        queue index: Int,
        size: Int,
        in memory: VhostUserMemory,
        request: String = ""
    ) throws(VhostUserError) -> [UInt64] {
        var areas: [UInt64] = []
        for (area, user) in zip(ringFormat.areas(size: size), [address.descriptor, address.available, address.used]) {
            areas.append(
                try memory.guestPhysicalAddress(
                    ofUserAddress: user,
                    count: area.byteCount,
                    what: "\(request)queue \(index) \(area.name)"
                )
            )
        }
        return areas
    }

    // MARK: State checks

    func runningRings() -> [Int] {
        rings.indices.filter { rings[$0].runner != nil }
    }

    func requireNoRunningRing(_ request: String) throws(VhostUserError) {
        let running = runningRings()
        guard running.isEmpty else {
            throw VhostUserError(
                .invalidState,
                "\(request) while queue\(running.count > 1 ? "s" : "") \(running.map(String.init).joined(separator: ", ")) "
                    + "run\(running.count > 1 ? "" : "s"); stop them first (GET_VRING_BASE)"
            )
        }
    }

    func requireStopped(_ index: Int, _ request: String) throws(VhostUserError) {
        guard rings[index].runner == nil else {
            throw VhostUserError(.invalidState, "\(request): queue \(index) runs; stop it first (GET_VRING_BASE)")
        }
    }

    func requireProtocolFeature(_ feature: VhostUserProtocolFeatures, _ request: String) throws(VhostUserError) {
        guard protocolFeatures.contains(feature) else {
            throw VhostUserError(.featureNotOffered, "\(request) needs the protocol feature \(feature), not negotiated")
        }
    }

    func checkSeals(_ memory: VhostUserMemory, _ request: String) throws(VhostUserError) {
        guard !memory.isSealedAgainstShrinking else { return }
        if backend.options.requireSealedMemory {
            throw VhostUserError(
                .invalidRegion,
                "\(request): a region's file is not sealed against shrinking (F_SEAL_SHRINK), which this back-end requires"
            )
        }
        log(
            .notice,
            "\(request): a region's file is not sealed against shrinking; a front-end that shrinks it makes us fault"
        )
    }

    func describe(_ memory: VhostUserMemory) -> String {
        memory.regions.map {
            "guest-physical \(hex($0.guestPhysicalAddress)) size \(hex($0.size)) user \(hex($0.userAddress))"
        }
        .joined(separator: "; ")
    }
}
