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
    /// Everything the ring core runs for any device, and VIRTIO_F_IN_ORDER: both queues use
    /// buffers in the order they were made available — the transmit queue through the core's
    /// loop, the receive queue through its own, which completes each buffer as it takes it — so
    /// the back-end may offer it. DPDK's virtio-user acks it unless told `in_order=0`.
    public static var supportedFeatures: Features { Features.all.union(.inOrder) }
    /// The transmit queue's ``handle(_:on:)`` copies into the loop or drops: it never waits, so
    /// the core's loop stages its completions and publishes `used.idx` once per run — under
    /// IN_ORDER, a run of transmitted buffers (read only, so used completely) is one used element.
    public static var completesWithoutBlocking: Bool { true }

    /// The connection's loopback: frames in flight from transmit to receive, and the counters.
    ///
    /// A single-producer, single-consumer ring of fixed slots allocated once: the transmit thread
    /// gathers each packet (header and frame) straight into the next slot, the receive thread
    /// scatters it from there into a receive buffer. No lock and no allocation per frame.
    public final class Loop: @unchecked Sendable {
        /// Frames the transmit queue took, well-formed, malformed, dropped (loop full), and
        /// frames the receive queue delivered.
        public let transmitted = Atomic<Int>(0)
        public let malformed = Atomic<Int>(0)
        public let dropped = Atomic<Int>(0)
        public let delivered = Atomic<Int>(0)
        /// Frames the loop holds at most; beyond, a transmitted frame is dropped (and counted).
        public static let capacity = 1024
        /// Bytes of a slot: a header and a frame up to a jumbo-less Ethernet frame's 1514, rounded.
        static let slotSize = 2048

        /// The next slot the producer fills, and the next the consumer empties (free-running).
        let produced = Atomic<Int>(0)
        let consumed = Atomic<Int>(0)
        let slots: UnsafeMutableRawPointer
        let lengths: UnsafeMutablePointer<Int>

        init() {
            slots = .allocate(byteCount: Self.capacity * Self.slotSize, alignment: 64)
            lengths = .allocate(capacity: Self.capacity)
            lengths.initialize(repeating: 0, count: Self.capacity)
        }

        deinit {
            slots.deallocate()
            lengths.deallocate()
        }

        func slot(_ index: Int) -> UnsafeMutableRawBufferPointer {
            UnsafeMutableRawBufferPointer(start: slots + (index % Self.capacity) * Self.slotSize, count: Self.slotSize)
        }
    }

    public typealias SharedState = Loop

    /// The loops of every connection, for the test to read their counters.
    public static let loops = Mutex<[Loop]>([])

    public static func makeSharedState(configuration: DeviceConfiguration) throws -> Loop {
        let loop = Loop()
        loops.withLock { $0.append(loop) }
        return loop
    }

    let loop: Loop
    let queue: Int

    /// Refuses: the device's queues work together through their connection's ``Loop``, which
    /// only a vhost-user back-end provides (``init(configuration:queue:shared:)``); alone, the
    /// device would have nothing to loop frames through.
    ///
    /// - Throws: ``NeedsConnection``, always.
    public init(configuration: DeviceConfiguration) throws(NeedsConnection) {
        throw NeedsConnection()
    }

    /// What ``init(configuration:)`` throws: the device runs only as a vhost-user back-end's.
    public struct NeedsConnection: Error, CustomStringConvertible {
        public var description: String {
            "the \(NetLoopbackDevice.name) device's queues share their connection's loop: only a vhost-user "
                + "back-end creates it (init(configuration:queue:shared:))"
        }
    }

    public init(configuration: DeviceConfiguration, queue: Int, shared: Loop) throws {
        loop = shared
        self.queue = queue
    }

    /// The transmit queue: a packet is gathered into the loop's next slot, checked, and handed to
    /// the receive side.
    public mutating func handle<M: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<M, N>
    ) throws -> Int {
        guard self.queue == 1 else { return 0 }
        let tail = loop.produced.load(ordering: .relaxed)
        guard tail - loop.consumed.load(ordering: .acquiring) < Loop.capacity else {
            loop.dropped.add(1, ordering: .relaxed)
            return 0
        }
        let slot = loop.slot(tail)
        let count = try queue.gather(request, into: slot)
        guard count == request.readableByteCount, count > Self.headerSize,
            Self.isTestpmdFrame(UnsafeRawBufferPointer(rebasing: slot[Self.headerSize..<count]))
        else {
            loop.malformed.add(1, ordering: .relaxed)
            return 0
        }
        loop.lengths[tail % Loop.capacity] = count
        loop.transmitted.add(1, ordering: .relaxed)
        loop.produced.store(tail + 1, ordering: .releasing)
        return 0
    }

    /// testpmd's generated frames: Ethernet, IPv4 (header checksum valid), UDP.
    public static func isTestpmdFrame(_ bytes: UnsafeRawBufferPointer) -> Bool {
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
        guard self.queue == 0 else {
            try queue.serve(&self, spins: spins, journal: &journal, until: shouldStop)
            return
        }
        var idle = 0
        while !shouldStop() {
            let head = loop.consumed.load(ordering: .relaxed)
            guard head != loop.produced.load(ordering: .acquiring) else {
                // Nothing to deliver: tell the driver about what was, then yield the CPU (the
                // transmit thread may be sharing it), and sleep a little once idle for a while.
                try queue.notifyIfNeeded()
                idle += 1
                if idle < 64 { sched_yield() } else { usleep(10) }
                continue
            }
            idle = 0
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
            // The slot holds the driver's header and the frame: the header becomes the receive
            // header (no offloads, one buffer).
            let slot = loop.slot(head)
            let count = loop.lengths[head % Loop.capacity]
            for offset in 0..<Self.headerSize { slot[offset] = 0 }
            slot[10] = 1  // num_buffers
            let written = try queue.scatter(UnsafeRawBufferPointer(rebasing: slot[0..<count]), into: request)
            loop.consumed.store(head + 1, ordering: .releasing)
            let id = request.id
            journal.completing(head: id)
            try queue.complete(request, written: written)
            journal.completed(head: id, usedIndex: queue.cursor.nextUsed)
            loop.delivered.add(1, ordering: .relaxed)
        }
    }
}
