public import Virtqueue
public import VirtqueueHeap

/// The in-process cycle on the heap backend: a driver and a device on one region, driven by the
/// calling thread, with every validation of the ring core on.
///
/// One cycle: the driver builds a chain and writes its payload in place, submits it; the device
/// takes it (parsing and validating the descriptors), touches the payload and completes it; the
/// driver takes the used element (validating it) and frees the chain's buffers. No notifier is
/// called: both ends are on this thread.
public struct HeapCycle: ~Copyable {
    /// The queue size both ends use.
    public static let queueSize = 256

    @usableFromInline var driver: DriverQueue<HeapRegion, InlineNotifier>
    @usableFromInline var device: DeviceQueue<HeapRegion, InlineNotifier>
    /// Bytes per segment.
    public let payload: Int
    @usableFromInline var sequence: UInt64 = 0

    /// Creates a queue of ``queueSize`` entries whose pool holds four buffers per entry of
    /// `payload` bytes (a multiple of 16, at least 16).
    ///
    /// - Throws: ``VirtqueueError`` if the queue cannot be set up.
    public init(payload: Int = 64, features: Features = .all) throws(VirtqueueError) {
        let layout = try RegionLayout(
            queueSizes: [Self.queueSize],
            dataAreaSize: 4 * Self.queueSize * payload,
            features: features
        )
        let region = try HeapRegion(layout: layout)
        let driver = try DriverQueue(region: region, notifier: InlineNotifier(), bufferSize: payload)
        let device = try DeviceQueue(region: region, notifier: InlineNotifier())
        self.driver = driver
        self.device = device
        self.payload = payload
    }

    /// Runs `iterations` one-segment cycles.
    ///
    /// - Returns: The sum of the sequence numbers the device saw.
    /// - Throws: ``VirtqueueError`` if any step fails or a message arrives damaged.
    @inlinable
    public mutating func runOneSegment(iterations: Int) throws(VirtqueueError) -> UInt64 {
        var checksum: UInt64 = 0
        for _ in 0..<iterations {
            let sequence = self.sequence
            self.sequence &+= 1
            var chain = driver.makeChain()
            try driver.appendReadable(to: &chain, count: payload) { bytes in
                Message.write(sequence, into: bytes)
            }
            try driver.submit(chain)

            guard let request = try device.nextRequest() else { throw Self.lost }
            var seen: UInt64? = nil
            do {
                try device.forEachReadable(in: request) { bytes in seen = Message.touch(bytes) }
            } catch {
                throw .fromView(error)
            }
            guard let seen else { throw Self.damaged }
            checksum &+= seen
            try device.complete(request, written: 0)

            guard let used = try driver.takeUsed() else { throw Self.lost }
            try driver.free(used)
        }
        return checksum
    }

    /// Runs `iterations` one-segment cycles with the driver's one-call
    /// ``DriverQueue/send(count:publish:_:)`` in place of `makeChain`, `appendReadable` and
    /// `submit`; the rest as ``runOneSegment(iterations:)``, written out again: the same half
    /// as an `@inline(__always)` function shared by the two loops moved their register
    /// allocation (`one` 299 → 300 or 306, `one-send` 287 → 304 or 305, two forms tried).
    ///
    /// - Returns: The sum of the sequence numbers the device saw.
    /// - Throws: ``VirtqueueError`` if any step fails or a message arrives damaged.
    @inlinable
    public mutating func runOneSend(iterations: Int) throws(VirtqueueError) -> UInt64 {
        var checksum: UInt64 = 0
        for _ in 0..<iterations {
            let sequence = self.sequence
            self.sequence &+= 1
            try driver.send(count: payload) { bytes in
                Message.write(sequence, into: bytes)
            }

            guard let request = try device.nextRequest() else { throw Self.lost }
            var seen: UInt64? = nil
            do {
                try device.forEachReadable(in: request) { bytes in seen = Message.touch(bytes) }
            } catch {
                throw .fromView(error)
            }
            guard let seen else { throw Self.damaged }
            checksum &+= seen
            try device.complete(request, written: 0)

            guard let used = try driver.takeUsed() else { throw Self.lost }
            try driver.free(used)
        }
        return checksum
    }

    /// Runs `iterations` three-segment cycles: two device-readable segments and one
    /// device-writable one, into which the device writes an 8-byte reply that the driver reads.
    ///
    /// - Returns: The sum of the replies the driver read.
    /// - Throws: ``VirtqueueError`` if any step fails or a message arrives damaged.
    @inlinable
    public mutating func runThreeSegments(iterations: Int) throws(VirtqueueError) -> UInt64 {
        var checksum: UInt64 = 0
        for _ in 0..<iterations {
            let sequence = self.sequence
            self.sequence &+= 1
            var chain = driver.makeChain()
            try driver.appendReadable(to: &chain, count: payload) { bytes in
                Message.write(sequence, into: bytes)
            }
            try driver.appendReadable(to: &chain, count: payload) { bytes in
                Message.write(sequence, into: bytes)
            }
            try driver.appendWritable(to: &chain, capacity: payload)
            try driver.submit(chain)

            guard let request = try device.nextRequest() else { throw Self.lost }
            var sum: UInt64 = 0
            var intact = true
            do {
                try device.forEachReadable(in: request) { bytes in
                    if let seen = Message.touch(bytes) { sum &+= seen } else { intact = false }
                }
                guard intact else { throw Self.damaged }
                try device.forEachWritable(in: request) { bytes in
                    bytes.storeBytes(of: sum.littleEndian, as: UInt64.self)
                }
            } catch {
                throw .fromView(error)
            }
            try device.complete(request, written: 8)

            guard let used = try driver.takeUsed() else { throw Self.lost }
            do {
                try driver.forEachSegment(of: used) { isWritable, bytes in
                    if isWritable, bytes.count >= 8 {
                        checksum &+= UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
                    }
                }
            } catch {
                throw .fromView(error)
            }
            try driver.free(used)
        }
        return checksum
    }

    @usableFromInline static let lost = VirtqueueError(.invalidConfiguration, "benchmark: a chain did not come through")
    @usableFromInline static let damaged = VirtqueueError(.invalidConfiguration, "benchmark: a payload arrived damaged")
}

extension VirtqueueError {
    /// The error a zero-copy view threw, as the benchmarks' typed `throws(VirtqueueError)`
    /// reports it. A view whose body does not throw throws only the token rule's
    /// ``VirtqueueError/Code-swift.struct/notOwned``; the views' `throws` is untyped because a
    /// body may throw its own errors.
    @usableFromInline @inline(never)
    static func fromView(_ error: any Error) -> VirtqueueError {
        error as? VirtqueueError ?? VirtqueueError(.invalidConfiguration, "benchmark: a view failed: \(error)")
    }
}
