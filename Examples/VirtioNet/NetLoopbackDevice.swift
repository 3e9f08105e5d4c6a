import Glibc
public import Synchronization
public import Virtqueue
public import VirtqueueVhostUser

/// A virtio-net device of our own for DPDK's virtio-user to drive: every frame the driver
/// transmits (queue 1) is checked and looped back to it on its receive queue (queue 0).
///
/// The two queues are served by two device values on two threads; they share a ``Loop``
/// (``VhostUserDevice/SharedState``): the transmit side queues frames, the receive side holds the
/// driver's receive buffers until a frame arrives for them — its own serving loop, on the same
/// core calls, since a receive buffer is not completed when it is taken.
public struct NetLoopbackDevice: VhostUserDevice {
    public static let name = "net-loopback"
    public static let queueCount = 2
    /// `virtio_net_hdr_v1`: 12 bytes under VERSION_1.
    public static let headerSize = VirtioNet.headerSize

    /// The connection's loopback: frames in flight from transmit to receive, and the counters.
    public final class Loop: Sendable {
        let frames = Mutex<[[UInt8]]>([])
        /// Frames the transmit queue took, well-formed, malformed, dropped (loop full), and
        /// frames the receive queue delivered.
        public let transmitted = Atomic<Int>(0)
        public let malformed = Atomic<Int>(0)
        public let dropped = Atomic<Int>(0)
        public let delivered = Atomic<Int>(0)
        /// Frames the loop holds at most; beyond, a transmitted frame is dropped (and counted).
        public static let capacity = 4096

        init() {}
    }

    public typealias SharedState = Loop

    /// The loops of every connection, for the test to read their counters.
    public static let loops = Mutex<[Loop]>([])

    public static func makeSharedState(configuration: DeviceConfiguration) throws -> Loop {
        let loop = Loop()
        loops.withLock { $0.append(loop) }
        return loop
    }

    let loop: Loop?
    let queue: Int

    public init() {
        loop = nil
        queue = 0
    }

    public init(configuration: DeviceConfiguration, queue: Int, shared: Loop) throws {
        loop = shared
        self.queue = queue
    }

    /// The transmit queue: a frame (after its header) is checked and queued for the receive side.
    public mutating func handle<M: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<M, N>
    ) throws -> Int {
        guard let loop, self.queue == 1 else { return 0 }
        var bytes = [UInt8](repeating: 0, count: request.readableByteCount)
        _ = try bytes.withUnsafeMutableBytes { try queue.gather(request, into: $0) }
        guard bytes.count > Self.headerSize, Self.isTestpmdFrame(bytes[Self.headerSize...]) else {
            loop.malformed.add(1, ordering: .relaxed)
            return 0
        }
        loop.transmitted.add(1, ordering: .relaxed)
        let queued = loop.frames.withLock { frames -> Bool in
            guard frames.count < Loop.capacity else { return false }
            frames.append(Array(bytes[Self.headerSize...]))
            return true
        }
        if !queued { loop.dropped.add(1, ordering: .relaxed) }
        return 0
    }

    /// testpmd's generated frames: Ethernet, IPv4 (header checksum valid), UDP.
    public static func isTestpmdFrame(_ frame: ArraySlice<UInt8>) -> Bool {
        let bytes = Array(frame)
        guard bytes.count >= 42, bytes[12] == 0x08, bytes[13] == 0x00, bytes[14] == 0x45, bytes[23] == 17 else {
            return false
        }
        var sum: UInt32 = 0
        for index in stride(from: 14, to: 34, by: 2) { sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1]) }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        return sum == 0xFFFF
    }

    /// The receive queue holds each receive buffer until a frame is there for it.
    public mutating func serve<M: GuestMemory & ~Copyable, N: Notifier, J: RequestJournal>(
        _ queue: inout DeviceQueue<M, N>,
        spins: Int,
        journal: inout J,
        until shouldStop: () -> Bool
    ) throws {
        guard let loop, self.queue == 0 else {
            try queue.serve(&self, spins: spins, journal: &journal, until: shouldStop)
            return
        }
        var header = [UInt8](repeating: 0, count: Self.headerSize)
        header[10] = 1  // num_buffers
        while !shouldStop() {
            guard let frame = loop.frames.withLock({ $0.first }) else {
                try queue.notifyIfNeeded()
                usleep(20)
                continue
            }
            guard let request = try queue.nextRequest() else {
                try queue.notifyIfNeeded()
                do {
                    try queue.waitForRequests(spins: spins)
                } catch {
                    if error.code == .peerDied { return }
                    throw error
                }
                continue
            }
            journal.taken(head: request.id)
            let packet = header + frame
            let written = try packet.withUnsafeBytes { try queue.scatter($0, into: request) }
            loop.frames.withLock { _ = $0.removeFirst() }
            let head = request.id
            journal.completing(head: head)
            try queue.complete(request, written: written)
            journal.completed(head: head, usedIndex: queue.cursor.nextUsed)
            loop.delivered.add(1, ordering: .relaxed)
        }
    }
}
