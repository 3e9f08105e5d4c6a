import Foundation
import Testing
import Virtqueue
import VirtqueueHeap

/// A device that answers each request with a checksum of its readable bytes: FNV-1a (64-bit)
/// and the byte count, 16 bytes scattered over the writable segments.
private struct ChecksumDevice: DeviceComponent {
    static let name = "checksum"

    init(configuration: DeviceConfiguration) {}

    mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var hash = HeapStressTests.fnvOffset
        try queue.forEachReadable(in: request) { bytes in
            for byte in bytes { hash = (hash ^ UInt64(byte)) &* HeapStressTests.fnvPrime }
        }
        let reply = (hash.littleEndian, UInt64(request.readableByteCount).littleEndian)
        return try withUnsafeBytes(of: reply) { try queue.scatter($0, into: request) }
    }
}

/// The heap backend under load: the driver on the test's thread, the device on its own, many
/// chains of random shapes in flight at once, every reply checked against a checksum the
/// driver computed itself. Both sides spin for a while before sleeping, so they often run at
/// once and hand chains over through the ring alone, without a notification in between —
/// the case where only the ring's release/acquire ordering keeps the bytes consistent. Run it
/// under ThreadSanitizer with `scripts/tsan.sh` (docs/thread-sanitizer.md).
@Suite
struct HeapStressTests {
    static let fnvOffset: UInt64 = 0xcbf2_9ce4_8422_2325
    static let fnvPrime: UInt64 = 0x0000_0100_0000_01b3

    /// SplitMix64: a small deterministic generator, so a failure can be replayed.
    struct Generator {
        var state: UInt64

        mutating func next(_ bound: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var value = state
            value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
            value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((value ^ (value >> 31)) % UInt64(bound))
        }
    }

    struct Expected {
        var hash: UInt64
        var count: Int
    }

    static let featureSets: [Features] = [[], [.eventIndex], [.indirectDescriptors], .all]

    /// Chains per run: `VIRTQUEUE_STRESS_CHAINS` from the environment (scripts/tsan.sh raises
    /// it), else 20,000.
    static var chainCount: Int {
        ProcessInfo.processInfo.environment["VIRTQUEUE_STRESS_CHAINS"].flatMap { Int($0) } ?? 20_000
    }

    @Test(arguments: featureSets)
    func manyChainsAcrossTwoThreads(features: Features) throws {
        let chainCount = Self.chainCount
        let bufferSize = 256
        let layout = try RegionLayout(queueSizes: [64], dataAreaSize: 160 * bufferSize, features: features)
        let device = try HeapBackend.launch(ChecksumDevice.self, layout: layout, spins: 4096)
        var driver = try DriverQueue(
            region: device.makeRegion(),
            notifier: device.notifier,
            bufferSize: bufferSize,
            indirectThreshold: 2
        )
        var generator = Generator(state: features.rawValue)
        var expected: [UInt16: Expected] = [:]
        var submitted = 0
        var completed = 0
        var kicks = 0
        var waits = 0

        while completed < chainCount {
            // Submit a burst of up to 32 chains, as many as fit.
            var burst = 0
            let burstSize = 1 + generator.next(32)
            while submitted < chainCount, burst < burstSize {
                var chain = driver.makeChain()
                var hash = Self.fnvOffset
                var count = 0
                do {
                    for _ in 0...generator.next(3) {
                        let length = generator.next(bufferSize + 1)
                        let seed = UInt8(truncatingIfNeeded: submitted)
                        try driver.appendReadable(to: &chain, count: length) { bytes in
                            for index in bytes.indices {
                                let byte = UInt8(truncatingIfNeeded: index) &* 31 &+ seed
                                bytes[index] = byte
                                hash = (hash ^ UInt64(byte)) &* Self.fnvPrime
                            }
                        }
                        count += length
                    }
                    // The 16-byte reply is split over two segments half the time.
                    if generator.next(2) == 0 {
                        try driver.appendWritable(to: &chain, capacity: 16)
                    } else {
                        try driver.appendWritable(to: &chain, capacity: 8)
                        try driver.appendWritable(to: &chain, capacity: 8)
                    }
                } catch {
                    #expect(error.code == .poolExhausted || error.code == .ringFull, "\(error)")
                    try driver.discard(chain)
                    break
                }
                let head = try driver.submit(chain)
                #expect(expected.updateValue(Expected(hash: hash, count: count), forKey: head) == nil)
                submitted += 1
                burst += 1
            }
            if try driver.notifyIfNeeded() { kicks += 1 }

            // Take back what is done; sleep only when nothing is.
            var took = 0
            while let used = try driver.takeUsed() {
                var reply = (UInt64(0), UInt64(0))
                let copied = try withUnsafeMutableBytes(of: &reply) { try driver.copyWrittenBytes(of: used, into: $0) }
                let want = expected.removeValue(forKey: used.id)
                #expect(copied == 16 && used.writtenByteCount == 16)
                #expect(UInt64(littleEndian: reply.0) == want?.hash, "chain \(used.id): checksum mismatch")
                #expect(UInt64(littleEndian: reply.1) == want.map { UInt64($0.count) }, "chain \(used.id): byte count")
                try driver.free(used)
                completed += 1
                took += 1
            }
            if took == 0 && burst == 0 {
                try driver.waitForUsed(spins: 4096)
                waits += 1
            }
        }

        #expect(device.stop() == .finished)
        #expect(expected.isEmpty)
        #expect(driver.inFlightCount == 0)
        #expect(driver.freeBufferCount == driver.bufferCount)
        #expect(driver.freeDescriptorCount == driver.queueSize)
        #expect(kicks <= submitted)
        print("HeapStressTests \(features): \(chainCount) chains, \(kicks) kicks, \(waits) driver waits")
    }
}
