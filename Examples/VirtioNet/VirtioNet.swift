import Glibc
import Synchronization
public import SystemPackage
public import Virtqueue
import VirtqueueVhostUser

/// virtio-net over vhost-user, as small as a test needs and a benchmark can measure: the
/// `virtio_net_hdr_v1` header, a loopback device for our back-end (``NetLoopbackDevice``) and a
/// front-end that sends numbered frames through a forwarding peer and checks what comes back
/// (``VirtioNet/ping(socket:frames:window:format:inOrder:)``).
public enum VirtioNet {
    /// `virtio_net_hdr_v1`: 12 bytes (VERSION_1 always carries `num_buffers`).
    public static let headerSize = 12
    /// The frames ``ping(socket:frames:window:format:inOrder:)`` sends.
    public static let frameSize = 64

    /// Frame `number`: destination and source MACs, an experimental EtherType (0x88B5), the
    /// number, and bytes derived from it.
    public static func frame(_ number: UInt32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: frameSize)
        bytes.withUnsafeMutableBytes { write(number, into: $0) }
        return bytes
    }

    /// Writes frame `number` into the first ``frameSize`` bytes of `bytes`.
    public static func write(_ number: UInt32, into bytes: UnsafeMutableRawBufferPointer, swapped: Bool = false) {
        let destination: [UInt8] = [0x02, 0, 0, 0, 0, 0x01]
        let source: [UInt8] = [0x02, 0, 0, 0, 0, 0x02]
        for index in 0..<6 {
            bytes[index] = swapped ? source[index] : destination[index]
            bytes[6 + index] = swapped ? destination[index] : source[index]
        }
        bytes[12] = 0x88
        bytes[13] = 0xB5
        bytes.storeBytes(of: number.littleEndian, toByteOffset: 14, as: UInt32.self)
        for index in 18..<frameSize { bytes[index] = UInt8(truncatingIfNeeded: number &+ UInt32(index)) }
    }

    /// The number of frame `bytes` if it is exactly a frame sent with its MAC addresses
    /// exchanged; `nil` otherwise.
    public static func swappedFrameNumber(_ bytes: UnsafeRawBufferPointer) -> UInt32? {
        guard bytes.count == frameSize else { return nil }
        let number = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 14, as: UInt32.self))
        return withUnsafeTemporaryAllocation(byteCount: frameSize, alignment: 8) { expected in
            write(number, into: expected, swapped: true)
            guard let left = expected.baseAddress, let right = bytes.baseAddress else { return nil }
            return memcmp(left, right, frameSize) == 0 ? number : nil
        }
    }

    /// What a ping run saw.
    public struct PingResult: Sendable {
        /// Frames sent, frames received, and received frames that were wrong (not a frame sent,
        /// a second copy, or other bytes than sent with the MACs exchanged).
        public var sent: Int
        public var received: Int
        public var mismatches: Int
        /// From the first frame sent to the last received.
        public var duration: Duration
        /// The features acked with the back-end (SET_FEATURES), bit 30 aside.
        public var features: Features
    }

    /// Connects to a vhost-user-net back-end at `socket` that sends every frame back with its MAC
    /// addresses exchanged (testpmd's `macswap`), sends `frames` numbered frames on the transmit
    /// queue (1) with at most `window` between sending and receiving, and takes them back on the
    /// receive queue (0), checking each. With `format` ``Virtqueue/RingFormat/packed`` both queues
    /// are packed rings (VIRTIO_F_RING_PACKED is acked, and must be offered). With `inOrder`
    /// VIRTIO_F_IN_ORDER is asked for and acked if the back-end offers it
    /// (``PingResult/features`` says whether it was): the back-end then uses buffers in the order
    /// they were sent and may report a run of them with one used entry.
    ///
    /// - Throws: ``VhostUserError`` from the set-up, `VirtqueueError` from the queues.
    public static func ping(
        socket: FilePath,
        frames: Int,
        window: Int = 128,
        format: RingFormat = .split,
        inOrder: Bool = false
    ) throws -> PingResult {
        let frontEnd = try VhostUserFrontEnd.connect(to: socket)
        defer { frontEnd.close() }
        let wanted: Features = inOrder ? [.version1, .inOrder] : .version1
        let features = try frontEnd.negotiate(wanted: wanted, ringFormat: format)
        let memory = try VhostUserFrontEndMemory(regions: [
            .init(guestPhysicalAddress: 0, size: 0x1_0000),
            .init(guestPhysicalAddress: 0x10_0000, size: 4 << 20),
        ])
        try frontEnd.setMemoryTable(memory)
        let receivePlacement = QueuePlacement(
            format: format,
            size: 256,
            descriptorArea: 0,
            driverArea: 0x1000,
            deviceArea: 0x2000
        )
        let sendPlacement = QueuePlacement(
            format: format,
            size: 256,
            descriptorArea: 0x4000,
            driverArea: 0x5000,
            deviceArea: 0x6000
        )
        var receive = try DriverQueue(
            memory: memory,
            placement: receivePlacement,
            notifier: try frontEnd.startRing(0, placement: receivePlacement, memory: memory),
            features: features,
            pool: 0x10_0000..<0x30_0000,
            bufferSize: 2048
        )
        var send = try DriverQueue(
            memory: memory,
            placement: sendPlacement,
            notifier: try frontEnd.startRing(1, placement: sendPlacement, memory: memory),
            features: features,
            pool: 0x30_0000..<0x50_0000,
            bufferSize: 2048
        )
        func postReceiveBuffers() throws {
            while receive.freeDescriptorCount > 0, receive.freeBufferCount > 0 {
                var chain = receive.makeChain()
                try receive.appendWritable(to: &chain, capacity: 2048)
                _ = try receive.submit(chain)
            }
            try receive.notifyIfNeeded()
        }
        try postReceiveBuffers()
        var result = PingResult(sent: 0, received: 0, mismatches: 0, duration: .zero, features: features)
        var seen = [Bool](repeating: false, count: frames)
        let start = ContinuousClock.now
        let deadline = start + .seconds(120)
        while result.received < frames, ContinuousClock.now < deadline {
            while result.sent < frames, result.sent - result.received < window, send.freeDescriptorCount > 0,
                send.freeBufferCount > 0
            {
                let number = UInt32(result.sent)
                // A frame is one device-readable buffer (virtio-net header, then the frame): the
                // one-call send, as Linux's virtqueue_add_outbuf with one buffer.
                try send.send(count: headerSize + frameSize) { packet in
                    for index in 0..<headerSize { packet[index] = 0 }
                    write(number, into: UnsafeMutableRawBufferPointer(rebasing: packet[headerSize...]))
                }
                result.sent += 1
            }
            try send.notifyIfNeeded()
            while let used = try send.takeUsed() { try send.free(used) }
            var took = 0
            while let used = try receive.takeUsed() {
                var number: UInt32?
                if used.writtenByteCount == headerSize + frameSize {
                    try receive.forEachSegment(of: used) { writable, bytes in
                        guard writable, bytes.count >= headerSize + frameSize else { return }
                        number = swappedFrameNumber(
                            UnsafeRawBufferPointer(rebasing: bytes[headerSize..<headerSize + frameSize])
                        )
                    }
                }
                try receive.free(used)
                took += 1
                result.received += 1
                if let number, Int(number) < frames, !seen[Int(number)] {
                    seen[Int(number)] = true
                } else {
                    result.mismatches += 1
                }
            }
            if took > 0 { try postReceiveBuffers() }
        }
        result.duration = ContinuousClock.now - start
        return result
    }
}
