import Virtqueue

/// A driver that streams chains to a ``ConformanceDevice`` and checks every reply: a readable
/// payload of 8 to 32 bytes (a sequence number, then a pattern) and a 16-byte writable buffer
/// for the reply (checksum, length, the sequence number's low 32 bits echoed).
///
/// The stress check's traffic, without an end: ``PeerProcessDeathCheck`` and the helper process
/// run it until the other side dies.
struct StreamingDriver {
    static let replyRoom = 16

    private var expectedChecksum: [UInt64]
    private var expectedLength: [UInt32]
    private var expectedSequence: [UInt32]
    /// Chains submitted so far.
    private(set) var sent = 0
    /// Chains that came back with the right reply.
    private(set) var received = 0

    init(queueSize: Int) {
        expectedChecksum = [UInt64](repeating: 0, count: queueSize)
        expectedLength = [UInt32](repeating: 0, count: queueSize)
        expectedSequence = [UInt32](repeating: 0, count: queueSize)
    }

    /// Fills the ring, kicks if needed, waits for used chains and checks each reply.
    ///
    /// - Throws: `VirtqueueError` from the queue (`peerDied` when the device has gone), or
    ///   ``CheckFailure`` naming the chain whose reply is wrong.
    mutating func step<Region: GuestMemory & ~Copyable, Notify: Notifier>(
        _ driver: inout DriverQueue<Region, Notify>
    ) throws {
        while driver.freeDescriptorCount >= 2, driver.freeBufferCount >= 2 {
            var chain = driver.makeChain()
            let sequence = UInt64(sent)
            let length = 8 + sent % 25
            var checksum: UInt64 = 0
            let base = sent
            try driver.appendReadable(to: &chain, count: length) { bytes in
                bytes.storeBytes(of: sequence.littleEndian, as: UInt64.self)
                for index in 8..<length { bytes[index] = UInt8(truncatingIfNeeded: base &+ index) }
                checksum = ConformanceDevice.checksum(UnsafeRawBufferPointer(bytes))
            }
            try driver.appendWritable(to: &chain, capacity: Self.replyRoom)
            let head = Int(try driver.submit(chain))
            expectedChecksum[head] = checksum
            expectedLength[head] = UInt32(length)
            expectedSequence[head] = UInt32(truncatingIfNeeded: sequence)
            sent += 1
        }
        try driver.notifyIfNeeded()
        try driver.waitForUsed()
        while let used = try driver.takeUsed() {
            let head = Int(used.id)
            var reply: (checksum: UInt64, length: UInt32, echo: UInt32) = (0, 0, 0)
            try driver.forEachSegment(of: used) { isWritable, bytes in
                guard isWritable, bytes.count == Self.replyRoom else { return }
                reply = (
                    UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self)),
                    UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                    UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
                )
            }
            guard used.status == .completed, used.writtenByteCount == Self.replyRoom,
                reply.checksum == expectedChecksum[head], reply.length == expectedLength[head],
                reply.echo == expectedSequence[head]
            else {
                throw CheckFailure(
                    "chain \(received) (id \(head)) came back \(used.status) with a reply of \(used.writtenByteCount) bytes \(reply); expected \(Self.replyRoom) bytes (0x\(String(expectedChecksum[head], radix: 16)), \(expectedLength[head]), \(expectedSequence[head]))"
                )
            }
            try driver.free(used)
            received += 1
        }
    }
}
