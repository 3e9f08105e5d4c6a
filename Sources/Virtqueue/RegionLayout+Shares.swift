extension RegionLayout {
    /// Share `share` of the data area cut in `count` equal shares, relative to the data area's
    /// start: a pool range for one of `count` driver queues that must not overlap
    /// (`DriverQueue/init(region:notifier:queueIndex:bufferSize:poolRange:indirectThreshold:)`).
    ///
    /// Each share starts on a 64-byte boundary (and so is 16-aligned, as a pool must be); the
    /// last takes what rounding leaves. `DeviceHandle/makeDriverQueue(queue:bufferSize:poolRange:indirectThreshold:)`
    /// gives each queue of a device that serves several its share this way.
    ///
    /// - Parameters:
    ///   - share: Which share, from 0 to `count` − 1.
    ///   - count: How many shares.
    /// - Returns: The share's byte range in the data area.
    /// - Throws: ``VirtqueueError/Code-swift.struct/invalidConfiguration`` naming the values when
    ///   `share` is not in `0..<count`, or a share would be empty.
    public func dataAreaShare(_ share: Int, of count: Int) throws(VirtqueueError) -> Range<Int> {
        guard count >= 1, (0..<count).contains(share) else {
            throw VirtqueueError(.invalidConfiguration, "share \(share) of \(count) does not exist")
        }
        let size = (dataAreaSize / count) & ~(Self.areaAlignment - 1)
        guard size > 0 else {
            throw VirtqueueError(
                .invalidConfiguration,
                "a data area of \(dataAreaSize) bytes cannot be cut in \(count) shares of \(Self.areaAlignment) bytes or more"
            )
        }
        let start = share * size
        return start..<(share == count - 1 ? dataAreaSize : start + size)
    }
}

extension RegionLayout {
    /// Checks a list of queues one device is to serve: at least one and at most
    /// ``maximumQueueCount``, each an index from 0 to 65535 — below `queueCount` when the
    /// region's queue count is known — and none listed twice. Every launcher, and the device
    /// host reading its handshake, checks its list with it.
    ///
    /// - Parameters:
    ///   - queues: The queue indices, in the order the device serves them.
    ///   - queueCount: The region's number of queues, if known.
    /// - Throws: ``VirtqueueError/Code-swift.struct/invalidConfiguration`` naming the value.
    public static func validateServedQueues(_ queues: [Int], queueCount: Int? = nil) throws(VirtqueueError) {
        guard (1...maximumQueueCount).contains(queues.count) else {
            throw VirtqueueError(
                .invalidConfiguration,
                "\(queues.count) queues; a device serves from 1 to \(maximumQueueCount)"
            )
        }
        let bound = queueCount ?? Int(UInt16.max) + 1
        for (position, index) in queues.enumerated() {
            guard (0..<bound).contains(index) else {
                throw VirtqueueError(
                    .invalidConfiguration,
                    queueCount.map { "queue \(index) is not one of the region's \($0) queues" }
                        ?? "queue index \(index) is out of range"
                )
            }
            guard !queues[..<position].contains(index) else {
                throw VirtqueueError(.invalidConfiguration, "queue \(index) is listed twice")
            }
        }
    }
}
