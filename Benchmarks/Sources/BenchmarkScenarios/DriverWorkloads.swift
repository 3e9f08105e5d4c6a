public import CBaselines
public import Virtqueue

/// The driver's side of the cross-thread and cross-process scenarios, generic over the backend:
/// the same loops run on the heap backend's device thread now and on the shared-memory and
/// sandbox backends' child process (see docs/performance.md, "Adding the cross-process rows").
public enum DriverWorkloads {
    /// Streams `count` messages of `size` bytes to the device, written in place, submitting
    /// `batch` chains before each `notifyIfNeeded()`, reclaiming completed chains as it goes;
    /// returns once every chain is back.
    ///
    /// - Parameters:
    ///   - spins: How long `waitForUsed` polls before sleeping when the ring is full.
    ///   - groupSize: Messages per timed group (a multiple of `batch`), as the C baselines time them.
    ///   - groupTimes: Receives the time the driver took to submit each group, as far as it has room.
    /// - Returns: The number of kicks the driver sent and the number of groups timed.
    /// - Throws: ``VirtqueueError`` from the queue or the notifier.
    @inlinable
    public static func stream<Region: GuestMemory & ~Copyable, Notify: Notifier>(
        _ driver: inout DriverQueue<Region, Notify>,
        size: Int,
        batch: Int,
        count: Int,
        spins: Int,
        groupSize: Int,
        groupTimes: UnsafeMutableBufferPointer<UInt64>
    ) throws(VirtqueueError) -> (kicks: Int, groups: Int) {
        var kicks = 0
        var groups = 0
        var groupStart = vqb_now_ns()
        var sequence: UInt64 = 0
        while Int(sequence) < count {
            let chains = min(batch, count - Int(sequence))
            // Room for the whole batch first, reclaiming in bulk: reclaiming one chain per
            // submitted one would make the two sides trade the index cache lines per message.
            while driver.freeDescriptorCount < chains || driver.freeBufferCount < chains {
                if try !reclaim(&driver) { try driver.waitForUsed(spins: spins) }
            }
            for _ in 0..<chains {
                let current = sequence
                var chain = driver.makeChain()
                try driver.appendReadable(to: &chain, count: size) { bytes in Message.write(current, into: bytes) }
                // Staged: `notifyIfNeeded` publishes `avail.idx` once for the batch, as the C
                // virtqueue baseline does.
                try driver.submit(chain, publish: false)
                sequence &+= 1
            }
            if try driver.notifyIfNeeded() { kicks += 1 }
            if Int(sequence) % groupSize == 0, groups < groupTimes.count {
                let now = vqb_now_ns()
                groupTimes[groups] = now - groupStart
                groups += 1
                groupStart = now
            }
        }
        while driver.inFlightCount > 0 {
            if try !reclaim(&driver) { try driver.waitForUsed(spins: spins) }
        }
        return (kicks, groups)
    }

    /// `count` round trips: a chain of one `size`-byte readable segment (payload in place; only
    /// its header and last byte are written per request) and one 16-byte writable segment; the
    /// device answers `{sequence, length}`, which is checked.
    ///
    /// - Parameters:
    ///   - spins: How long `waitForUsed` polls before sleeping (`Int.max`: busy-poll).
    ///   - groupTimes: Receives the duration of each group of `VQB_GROUP` consecutive round trips
    ///     (as the C baselines record them), as far as it has room.
    /// - Returns: The number of kicks the driver sent and the number of group times recorded.
    /// - Throws: ``VirtqueueError`` from the queue or the notifier, or if a reply is wrong.
    @inlinable
    public static func roundTrips<Region: GuestMemory & ~Copyable, Notify: Notifier>(
        _ driver: inout DriverQueue<Region, Notify>,
        size: Int,
        count: Int,
        spins: Int,
        groupTimes: UnsafeMutableBufferPointer<UInt64>
    ) throws(VirtqueueError) -> (kicks: Int, groups: Int) {
        var kicks = 0
        var groups = 0
        var groupStart = vqb_now_ns()
        for index in 0..<count {
            let sequence = UInt64(index)
            var chain = driver.makeChain()
            try driver.appendReadable(to: &chain, count: size) { bytes in
                Message.write(sequence, into: bytes, fillAll: false)
            }
            try driver.appendWritable(to: &chain, capacity: 16)
            try driver.submit(chain)
            if try driver.notifyIfNeeded() { kicks += 1 }
            while true {
                if let used = try driver.takeUsed() {
                    var reply: UInt64 = .max
                    do {
                        try driver.forEachSegment(of: used) { isWritable, bytes in
                            if isWritable, bytes.count >= 8 {
                                reply = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
                            }
                        }
                    } catch {
                        throw .fromView(error)
                    }
                    try driver.free(used)
                    guard reply == sequence else { throw wrongReply }
                    break
                }
                try driver.waitForUsed(spins: spins)
            }
            if (index + 1) % Int(VQB_GROUP) == 0, groups < groupTimes.count {
                let now = vqb_now_ns()
                groupTimes[groups] = now - groupStart
                groups += 1
                groupStart = now
            }
        }
        return (kicks, groups)
    }

    /// Takes back and frees every chain the device has completed; whether there was any.
    @inlinable
    static func reclaim<Region: GuestMemory & ~Copyable, Notify: Notifier>(
        _ driver: inout DriverQueue<Region, Notify>
    ) throws(VirtqueueError) -> Bool {
        var any = false
        while let used = try driver.takeUsed() {
            try driver.free(used)
            any = true
        }
        return any
    }

    @usableFromInline static let wrongReply = VirtqueueError(
        .invalidConfiguration,
        "benchmark: a reply did not match its request"
    )
}
