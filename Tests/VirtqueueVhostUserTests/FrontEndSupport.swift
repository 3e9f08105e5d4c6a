import CVirtqueueSystem
import Foundation
import Glibc
import Synchronization
import SystemPackage
import Testing
import Virtqueue
import VirtqueueVhostUser

// MARK: The device

/// Upper-cases what it reads; two queues; a 16-byte config space whose last 8 bytes are writable.
struct Shout: VhostUserDevice {
    static let name = "shout"
    static let queueCount = 2
    static let writableConfigBytes = 8..<16
    static func configSpace(for configuration: DeviceConfiguration) throws -> [UInt8] { Array(0..<16) }
    /// IN_ORDER too: the core's loop completes each request as it takes it, so the back-end
    /// offers bit 35; ``TestFrontEnd/negotiate(sendMemoryTable:inflight:format:inOrder:)`` acks it
    /// only when asked.
    static var supportedFeatures: Features { Features.all.union(.inOrder) }

    /// Requests this device value served.
    var served = 0

    init(configuration: DeviceConfiguration) {}

    mutating func handle<M: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<M, N>
    ) throws -> Int {
        var text = [UInt8](repeating: 0, count: request.readableByteCount)
        _ = try text.withUnsafeMutableBytes { try queue.gather(request, into: $0) }
        served += 1
        let reply = text.map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 }
        return try reply.withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}

// MARK: Log

/// Collects a back-end's log records.
final class LogCollector: Sendable {
    private let records = Mutex<[VhostUserLogRecord]>([])

    var sink: VhostUserLogSink { { [self] record in records.withLock { $0.append(record) } } }

    var all: [VhostUserLogRecord] { records.withLock { $0 } }

    /// The error codes of every record that carries one.
    var errorCodes: [VhostUserError.Code] { all.compactMap { $0.error?.code } }

    /// The first record carrying an error with `code`.
    func first(_ code: VhostUserError.Code) -> VhostUserLogRecord? { all.first { $0.error?.code == code } }
}

// MARK: Guest memory, the front-end's view

/// The front-end's guest memory: the library's (`VhostUserFrontEndMemory`), built from a compact
/// layout, with the user-address lookup the tests use on areas they know are inside it.
typealias FrontEndMemory = VhostUserFrontEndMemory

extension VhostUserFrontEndMemory {
    convenience init(_ layout: [(guestPhysical: UInt64, size: Int, mmapOffset: UInt64)]) throws {
        try self.init(
            regions: layout.map {
                .init(guestPhysicalAddress: $0.guestPhysical, size: $0.size, mmapOffset: $0.mmapOffset)
            }
        )
    }

    /// The user address of `address`, or a poison value a back-end refuses when it is outside.
    func userAddress(of address: UInt64) -> UInt64 {
        let found: UInt64? = userAddress(of: address)
        return found ?? 0xdead_0000
    }
}

// MARK: The driver's notifier

/// The driver's notifier over the front-end's kick and call eventfds. A wait gives up after
/// 10 s with `peerDied`, so a broken back-end fails a test instead of hanging it.
struct FrontEndNotifier: Notifier {
    let kick: FileDescriptor
    let call: FileDescriptor

    func notify() throws(VirtqueueError) {
        guard vq_eventfd_signal(kick.rawValue) == 0 else {
            throw VirtqueueError(.notifierFailed, "kick failed: \(Errno(rawValue: errno))")
        }
    }

    func wait() throws(VirtqueueError) {
        var entry = pollfd(fd: call.rawValue, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&entry, 1, 10_000)
            if ready == 0 { throw VirtqueueError(.peerDied, "the back-end did not call within 10 s") }
            if ready < 0 && errno == EINTR { continue }
            if vq_eventfd_drain(call.rawValue) != 0 { return }
        }
    }
}

typealias FrontEndDriver = DriverQueue<FrontEndMemory, FrontEndNotifier>

// MARK: The front-end

/// A vhost-user front-end of our own, built from the message encoder: guest memory of two
/// regions with a gap between them (the second at a page-unaligned file offset), the rings of
/// each queue in the first region, the buffers in the second.
final class TestFrontEnd {
    static let queueSize = 64
    static let bufferSize = 256

    let socket: VhostUserSocket
    let memory: FrontEndMemory
    let kicks: [FileDescriptor]
    let calls: [FileDescriptor]
    /// The features acked by ``negotiate()``.
    var acked: UInt64 = 0
    /// The ring format ``negotiate()`` chose.
    var format: RingFormat = .split

    init(socket: VhostUserSocket) throws {
        self.socket = socket
        memory = try FrontEndMemory([
            (guestPhysical: 0, size: 0x1_0000, mmapOffset: 0),
            (guestPhysical: 0x10_0000, size: 0x4_0000, mmapOffset: 0x1800),
        ])
        kicks = try (0..<Shout.queueCount).map { _ in try makeEventfd() }
        calls = try (0..<Shout.queueCount).map { _ in try makeEventfd() }
    }

    /// A second connection of the same front-end: the same guest memory and eventfds (a front-end
    /// that reconnects to a restarted back-end). The eventfds stay `other`'s to close.
    init(socket: VhostUserSocket, reusing other: TestFrontEnd) {
        self.socket = socket
        memory = other.memory
        kicks = other.kicks
        calls = other.calls
        ownsEventfds = false
    }

    private var ownsEventfds = true

    deinit {
        if ownsEventfds { for fd in kicks + calls { try? fd.close() } }
    }

    /// Closes the connection (both directions): the back-end reads end of stream.
    func hangUp() {
        _ = shutdown(socket.fileDescriptor.rawValue, CInt(SHUT_RDWR))
    }

    // MARK: Messages

    /// Sends `message` with NEED_REPLY and returns the REPLY_ACK status (0: success).
    @discardableResult
    func ack(_ message: VhostUserMessage) throws -> UInt64 {
        try socket.send(try message.encode(needsReply: true))
        let frame = try socket.receive(expectingReply: true, limits: .shout, idleTimeout: .seconds(10))
        guard case .u64(let status) = try frame.decodeReply(to: message.request, limits: .shout) else {
            throw VhostUserError(.unexpectedReply, "no u64")
        }
        return status
    }

    /// Sends `message` with NEED_REPLY and expects success.
    func expectSuccess(_ message: VhostUserMessage, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let status = try ack(message)
        #expect(status == 0, "\(message.request) was refused", sourceLocation: sourceLocation)
    }

    /// Sends a request that has a reply of its own and returns the reply.
    func get(_ message: VhostUserMessage) throws -> VhostUserReply {
        try socket.send(try message.encode())
        let frame = try socket.receive(expectingReply: true, limits: .shout, idleTimeout: .seconds(10))
        return try frame.decodeReply(to: message.request, limits: .shout)
    }

    func getU64(_ message: VhostUserMessage) throws -> UInt64 {
        guard case .u64(let value) = try get(message) else { throw VhostUserError(.unexpectedReply, "no u64") }
        return value
    }

    // MARK: Set-up

    /// QEMU's opening sequence: features, owner, protocol features, queue count, features acked,
    /// memory table.
    /// RING_PACKED is acked only for a packed `format`, IN_ORDER only with `inOrder`.
    func negotiate(
        sendMemoryTable: Bool = true,
        inflight: Bool = false,
        format: RingFormat = .split,
        inOrder: Bool = false
    ) throws {
        let offered = try getU64(.getFeatures)
        #expect(offered & VhostUserProtocolFeatures.virtioFeatureBit != 0)
        #expect(offered & Features.version1.rawValue != 0)
        try socket.send(try VhostUserMessage.setOwner.encode())
        let protocolOffered = VhostUserProtocolFeatures(rawValue: try getU64(.getProtocolFeatures))
        var wanted: VhostUserProtocolFeatures = [.multipleQueues, .replyAck, .config, .configureMemorySlots]
        if inflight { wanted.insert(.inflightSharedMemory) }
        #expect(protocolOffered.isSuperset(of: wanted.union(.inflightSharedMemory)))
        try socket.send(try VhostUserMessage.setProtocolFeatures(wanted).encode())
        #expect(try getU64(.getQueueNum) == UInt64(Shout.queueCount))
        acked = offered & ~Features.ringPacked.rawValue & ~Features.inOrder.rawValue
        if inOrder {
            #expect(offered & Features.inOrder.rawValue != 0, "IN_ORDER is not offered")
            acked |= Features.inOrder.rawValue
        }
        if format == .packed {
            #expect(offered & Features.ringPacked.rawValue != 0, "RING_PACKED is not offered")
            acked |= Features.ringPacked.rawValue
        }
        self.format = format
        try expectSuccess(.setFeatures(acked))
        if sendMemoryTable { try expectSuccess(.setMemoryTable(memory.table)) }
    }

    /// Where queue `index`'s rings lie (guest-physical), in the negotiated format; `cursor` `nil`
    /// for a fresh ring.
    func placement(_ index: Int, cursor: QueueCursor? = nil) -> QueuePlacement {
        let base = UInt64(index) * 0x4000
        return QueuePlacement(
            format: format,
            size: Self.queueSize,
            descriptorArea: base,
            driverArea: base + 0x1000,
            deviceArea: base + 0x2000,
            cursor: cursor
        )
    }

    func pool(_ index: Int) -> Range<UInt64> {
        let start = 0x10_0000 + UInt64(index) * 0x2_0000
        return start..<start + 0x2_0000
    }

    /// SET_VRING_NUM / BASE / ADDR / CALL / KICK / ENABLE for queue `index`, each acked; `base`
    /// `nil` for a fresh ring of the negotiated format.
    func startRing(_ index: Int, base: UInt32? = nil) throws {
        let placement = placement(index)
        let queue = UInt32(index)
        try expectSuccess(.setVringNum(VhostUserVringState(index: queue, num: UInt32(Self.queueSize))))
        let base = base ?? VhostUserVringBase.encode(placement.cursor, format: format)
        try expectSuccess(.setVringBase(VhostUserVringState(index: queue, num: base)))
        try expectSuccess(
            .setVringAddress(
                VhostUserVringAddress(
                    index: queue,
                    descriptor: memory.userAddress(of: placement.descriptorArea),
                    used: memory.userAddress(of: placement.deviceArea),
                    available: memory.userAddress(of: placement.driverArea)
                )
            )
        )
        try expectSuccess(
            .setVringCall(VhostUserVringFile(index: UInt8(index), fileDescriptor: .init(borrowing: calls[index])))
        )
        try expectSuccess(
            .setVringKick(VhostUserVringFile(index: UInt8(index), fileDescriptor: .init(borrowing: kicks[index])))
        )
        try expectSuccess(.setVringEnable(VhostUserVringState(index: queue, num: 1)))
    }

    /// GET_VRING_BASE: stops the ring and returns its available index.
    func stopRing(_ index: Int) throws -> UInt32 {
        guard case .vringState(let state) = try get(.getVringBase(VhostUserVringState(index: UInt32(index), num: 0)))
        else { throw VhostUserError(.unexpectedReply, "no vring state") }
        #expect(state.index == UInt32(index))
        return state.num
    }

    /// The driver's end of queue `index`, on the front-end's own view of the memory.
    func makeDriver(_ index: Int, cursor: QueueCursor? = nil) throws -> FrontEndDriver {
        try FrontEndDriver(
            memory: memory,
            placement: placement(index, cursor: cursor),
            notifier: FrontEndNotifier(kick: kicks[index], call: calls[index]),
            features: Features(rawValue: acked & ~VhostUserProtocolFeatures.virtioFeatureBit),
            pool: pool(index),
            bufferSize: Self.bufferSize
        )
    }
}

extension VhostUserLimits {
    static let shout = VhostUserLimits(queueCount: Shout.queueCount, configSpaceSize: 16)
}

// MARK: Driving

/// Submits each text as one request (readable text, 64 writable bytes), kicks, and collects the
/// replies in submission order.
func exchange<N: Notifier>(_ driver: inout DriverQueue<FrontEndMemory, N>, _ texts: [String]) throws -> [String] {
    var order: [UInt16: Int] = [:]
    for (index, text) in texts.enumerated() {
        var chain = driver.makeChain()
        try driver.appendReadable(to: &chain, copying: Array(text.utf8))
        try driver.appendWritable(to: &chain, capacity: 64)
        order[try driver.submit(chain)] = index
    }
    try driver.notifyIfNeeded()
    return try collect(&driver, order: order)
}

/// Records an issue if a chain came back.
func expectNothingUsed(_ driver: inout FrontEndDriver, _ comment: Comment) throws {
    if let used = try driver.takeUsed() {
        Issue.record(comment)
        try driver.free(used)
    }
}

/// Waits for the chains in `order` (id → position) and returns their replies by position.
func collect<N: Notifier>(_ driver: inout DriverQueue<FrontEndMemory, N>, order: [UInt16: Int]) throws -> [String] {
    var replies = [String?](repeating: nil, count: order.count)
    var left = order.count
    while left > 0 {
        try driver.waitForUsed()
        while let used = try driver.takeUsed() {
            var bytes = [UInt8](repeating: 0, count: used.writtenByteCount)
            _ = try bytes.withUnsafeMutableBytes { try driver.copyWrittenBytes(of: used, into: $0) }
            if let position = order[used.id] {
                #expect(replies[position] == nil, "chain \(used.id) completed twice")
                replies[position] = String(decoding: bytes, as: UTF8.self)
                left -= 1
            } else {
                Issue.record("chain \(used.id) completed but was not submitted")
            }
            try driver.free(used)
        }
    }
    return replies.map { $0 ?? "" }
}

// MARK: The back-end's thread

/// `backend.serve(connection:)` on a thread of its own.
final class BackendThread: @unchecked Sendable {
    private let finished = DispatchSemaphore(value: 0)
    private let result = Mutex<VhostUserError??>(nil)

    init(_ backend: VhostUserBackend<Shout>, _ socket: VhostUserSocket) {
        let thread = Thread { [self] in
            var outcome: VhostUserError? = nil
            do throws(VhostUserError) { try backend.serve(connection: socket) } catch { outcome = error }
            result.withLock { $0 = .some(outcome) }
            finished.signal()
        }
        thread.start()
    }

    /// Waits up to 10 s for `serve` to return: `.some(nil)` for a clean end, `.some(error)` for
    /// the error it threw, `nil` if it did not return.
    func join() -> VhostUserError?? {
        guard finished.wait(timeout: .now() + 10) == .success else { return nil }
        return result.withLock { $0 }
    }
}

/// A back-end for ``Shout`` logging into `log`, and a connection to it served on a thread.
func connect(
    _ backend: VhostUserBackend<Shout>
) throws -> (frontEnd: TestFrontEnd, thread: BackendThread) {
    let (frontEndSocket, backEndSocket) = try VhostUserSocket.makePair()
    let thread = BackendThread(backend, backEndSocket)
    return (try TestFrontEnd(socket: frontEndSocket), thread)
}

/// A whole honest session on a new connection: set-up, two queues, requests on both, clean end.
func expectHonestSessionWorks(_ backend: VhostUserBackend<Shout>, sourceLocation: SourceLocation = #_sourceLocation)
    throws
{
    let (frontEnd, thread) = try connect(backend)
    try frontEnd.negotiate()
    for queue in 0..<Shout.queueCount { try frontEnd.startRing(queue) }
    for queue in 0..<Shout.queueCount {
        var driver = try frontEnd.makeDriver(queue)
        let replies = try exchange(&driver, ["honest \(queue)", "again"])
        #expect(replies == ["HONEST \(queue)", "AGAIN"], sourceLocation: sourceLocation)
    }
    frontEnd.hangUp()
    let end = thread.join()
    #expect(end != nil, "the back-end did not notice the front-end left", sourceLocation: sourceLocation)
    #expect(
        end.flatMap { $0 } == nil,
        "the honest session ended with \(String(describing: end))",
        sourceLocation: sourceLocation
    )
}
