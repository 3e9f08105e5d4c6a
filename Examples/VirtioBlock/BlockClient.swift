public import Virtqueue

/// One block request as the driver issued it: enough to check its result or issue it again.
public struct BlockOperation: Hashable, Sendable {
    public var kind: BlockRequest.Kind
    public var sector: UInt64
    /// Data bytes: written for a write, read for a read.
    public var byteCount: Int

    public init(kind: BlockRequest.Kind, sector: UInt64, byteCount: Int) {
        self.kind = kind
        self.sector = sector
        self.byteCount = byteCount
    }
}

/// The driver side of the virtio-blk example: issues reads and writes as chains on any
/// backend's ``DriverQueue`` and matches completions to the operations that caused them.
///
/// It remembers every operation in flight, so after the device dies the caller can learn
/// which operations were lost (``reclaimAbandoned()``) and issue them again on a new queue.
public struct BlockClient<Region: GuestMemory & ~Copyable, Notify: Notifier>: ~Copyable {
    public var queue: DriverQueue<Region, Notify>
    /// The operation of each chain in flight, by chain id (head descriptor): allocated once.
    var inFlight: [BlockOperation?]
    var inFlightTotal = 0

    public init(queue: consuming DriverQueue<Region, Notify>) {
        inFlight = Array(repeating: nil, count: queue.queueSize)
        self.queue = queue
    }

    mutating func record(_ operation: BlockOperation, id: UInt16) {
        inFlight[Int(id)] = operation
        inFlightTotal += 1
    }

    mutating func removeOperation(id: UInt16) -> BlockOperation? {
        guard let operation = inFlight[Int(id)] else { return nil }
        inFlight[Int(id)] = nil
        inFlightTotal -= 1
        return operation
    }

    /// Operations submitted and not yet completed.
    public var inFlightCount: Int { inFlightTotal }

    /// Whether a request of `byteCount` data bytes fits now (three descriptors and buffers).
    public func canSubmit(byteCount: Int) -> Bool {
        byteCount <= queue.bufferSize && queue.freeBufferCount >= 3
            && (queue.freeDescriptorCount >= 3
                || (queue.features.contains(.indirectDescriptors) && queue.freeDescriptorCount >= 1))
    }

    /// Issues a write of `byteCount` bytes at `sector`; `fill` writes the data in place.
    public mutating func write(
        sector: UInt64,
        byteCount: Int,
        _ fill: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(VirtqueueError) {
        var chain = queue.makeChain()
        do throws(VirtqueueError) {
            try queue.appendReadable(to: &chain, count: BlockRequest.headerSize) { header in
                BlockRequest.encodeHeader(kind: .write, sector: sector, into: header)
            }
            try queue.appendReadable(to: &chain, count: byteCount, fill)
            try queue.appendWritable(to: &chain, capacity: 1)
        } catch {
            try queue.discard(chain)
            throw error
        }
        let id = try queue.submit(chain)
        record(BlockOperation(kind: .write, sector: sector, byteCount: byteCount), id: id)
    }

    /// Issues a read of `byteCount` bytes at `sector`.
    public mutating func read(sector: UInt64, byteCount: Int) throws(VirtqueueError) {
        var chain = queue.makeChain()
        do throws(VirtqueueError) {
            try queue.appendReadable(to: &chain, count: BlockRequest.headerSize) { header in
                BlockRequest.encodeHeader(kind: .read, sector: sector, into: header)
            }
            try queue.appendWritable(to: &chain, capacity: byteCount)
            try queue.appendWritable(to: &chain, capacity: 1)
        } catch {
            try queue.discard(chain)
            throw error
        }
        let id = try queue.submit(chain)
        record(BlockOperation(kind: .read, sector: sector, byteCount: byteCount), id: id)
    }

    /// Issues a flush: every write completed before it is durable when it completes.
    public mutating func flush() throws(VirtqueueError) {
        var chain = queue.makeChain()
        do throws(VirtqueueError) {
            try queue.appendReadable(to: &chain, count: BlockRequest.headerSize) { header in
                BlockRequest.encodeHeader(kind: .flush, sector: 0, into: header)
            }
            try queue.appendWritable(to: &chain, capacity: 1)
        } catch {
            try queue.discard(chain)
            throw error
        }
        let id = try queue.submit(chain)
        record(BlockOperation(kind: .flush, sector: 0, byteCount: 0), id: id)
    }

    /// Issues a GET_ID: the device writes its identifier (up to 20 bytes, NUL-padded).
    public mutating func identify() throws(VirtqueueError) {
        var chain = queue.makeChain()
        do throws(VirtqueueError) {
            try queue.appendReadable(to: &chain, count: BlockRequest.headerSize) { header in
                BlockRequest.encodeHeader(kind: .identify, sector: 0, into: header)
            }
            try queue.appendWritable(to: &chain, capacity: BlockRequest.identifierSize)
            try queue.appendWritable(to: &chain, capacity: 1)
        } catch {
            try queue.discard(chain)
            throw error
        }
        let id = try queue.submit(chain)
        record(BlockOperation(kind: .identify, sector: 0, byteCount: BlockRequest.identifierSize), id: id)
    }

    /// Takes every completed request, calling `body` with the operation, the device's status
    /// and, for a read, the data it returned.
    ///
    /// - Returns: The number of requests taken.
    public mutating func reap(
        _ body: (BlockOperation, BlockRequest.Status?, UnsafeRawBufferPointer) throws -> Void
    ) throws -> Int {
        var taken = 0
        while let used = try queue.takeUsed() {
            let operation = removeOperation(id: used.id)
            var data = UnsafeRawBufferPointer(start: nil, count: 0)
            var status: BlockRequest.Status?
            var writableIndex = 0
            try queue.forEachSegment(of: used) { isWritable, bytes in
                guard isWritable else { return }
                let carriesData = operation?.kind == .read || operation?.kind == .identify
                let isStatus = carriesData ? writableIndex == 1 : writableIndex == 0
                if isStatus {
                    status = bytes.first.flatMap(BlockRequest.Status.init(rawValue:))
                } else {
                    data = bytes
                }
                writableIndex += 1
            }
            if let operation { try body(operation, status, data) }
            try queue.free(used)
            taken += 1
        }
        return taken
    }

    /// After the queue broke (the device died), takes back every chain still in flight and
    /// returns the operations they carried, so they can be issued again.
    public mutating func reclaimAbandoned() throws(VirtqueueError) -> [BlockOperation] {
        var lost: [BlockOperation] = []
        while let abandoned = queue.takeAbandoned() {
            if let operation = removeOperation(id: abandoned.id) { lost.append(operation) }
            try queue.free(abandoned)
        }
        for index in inFlight.indices {
            if let operation = inFlight[index] { lost.append(operation) }
            inFlight[index] = nil
        }
        inFlightTotal = 0
        return lost.sorted { $0.sector < $1.sector }
    }
}
