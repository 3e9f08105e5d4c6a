import VirtioBlock
import Virtqueue

/// The demo's workload: write the whole disk with a known pattern, flush, read it all back and
/// verify every byte. It survives the device dying: operations that were in flight are issued
/// again on the next device.
struct Workload {
    enum Phase: String {
        case writing = "writing"
        case flushing = "flushing"
        case reading = "reading back"
        case done = "done"
    }

    enum Outcome {
        case finished
        case deviceDied(VirtqueueError)
    }

    let sectorCount: UInt64
    let requestBytes: Int
    var phase = Phase.writing
    var nextSector: UInt64 = 0
    /// Operations lost with a dead device, to issue again first.
    var reissue: [BlockOperation] = []
    var flushIssued = false

    // Statistics.
    var requests = 0
    var bytesWritten = 0
    var bytesRead = 0
    var kicks = 0
    var failures = 0
    var mismatches = 0
    var reissued = 0

    var sectorsPerRequest: UInt64 { UInt64(requestBytes / BlockRequest.sectorSize) }
    var bytesMoved: Int { bytesWritten + bytesRead }

    /// Drives `client` until the workload is done or the device dies; `progress` is called
    /// after every batch of completions.
    mutating func run<R: GuestMemory & ~Copyable, N: Notifier>(
        _ client: inout BlockClient<R, N>,
        progress: (Workload) -> Void
    ) throws -> Outcome {
        do {
            while phase != .done {
                try submitWhatFits(&client)
                if try client.queue.notifyIfNeeded() { kicks += 1 }
                if client.inFlightCount == 0 {
                    advancePhase()
                    continue
                }
                try client.queue.waitForUsed()
                _ = try client.reap { operation, status, data in
                    complete(operation, status: status, data: data)
                }
                progress(self)
            }
            return .finished
        } catch let error as VirtqueueError where error.code == .peerDied || error.code == .queueBroken {
            let lost = try client.reclaimAbandoned()
            reissue += lost
            reissued += lost.count
            return .deviceDied(error)
        }
    }

    mutating func submitWhatFits<R: GuestMemory & ~Copyable, N: Notifier>(_ client: inout BlockClient<R, N>) throws {
        while client.canSubmit(byteCount: requestBytes) {
            if let operation = reissue.popLast() {
                try issue(operation, on: &client)
                continue
            }
            switch phase {
            case .writing, .reading:
                guard nextSector < sectorCount else { return }
                let count = Int(min(sectorsPerRequest, sectorCount - nextSector)) * BlockRequest.sectorSize
                let kind: BlockRequest.Kind = phase == .writing ? .write : .read
                try issue(BlockOperation(kind: kind, sector: nextSector, byteCount: count), on: &client)
                nextSector += sectorsPerRequest
            case .flushing:
                guard !flushIssued else { return }
                try issue(BlockOperation(kind: .flush, sector: 0, byteCount: 0), on: &client)
                flushIssued = true
            case .done:
                return
            }
        }
    }

    func issue<R: GuestMemory & ~Copyable, N: Notifier>(
        _ operation: BlockOperation,
        on client: inout BlockClient<R, N>
    ) throws {
        switch operation.kind {
        case .write:
            try client.write(sector: operation.sector, byteCount: operation.byteCount) { buffer in
                Pattern.fill(buffer, sector: operation.sector)
            }
        case .read:
            try client.read(sector: operation.sector, byteCount: operation.byteCount)
        case .flush, .identify:
            try client.flush()
        }
    }

    mutating func complete(_ operation: BlockOperation, status: BlockRequest.Status?, data: UnsafeRawBufferPointer) {
        requests += 1
        guard status == .ok else {
            failures += 1
            return
        }
        switch operation.kind {
        case .write:
            bytesWritten += operation.byteCount
        case .read:
            bytesRead += operation.byteCount
            if !Pattern.matches(data, sector: operation.sector, byteCount: operation.byteCount) { mismatches += 1 }
        case .flush, .identify:
            break
        }
    }

    mutating func advancePhase() {
        guard reissue.isEmpty else { return }
        switch phase {
        case .writing where nextSector >= sectorCount:
            phase = .flushing
        case .flushing where flushIssued:
            phase = .reading
            nextSector = 0
        case .reading where nextSector >= sectorCount:
            phase = .done
        default:
            break
        }
    }
}

/// The bytes written to each sector: 64-bit words derived from the sector number and position.
enum Pattern {
    static func word(sector: UInt64, index: Int) -> UInt64 {
        (sector &* 0x9E37_79B9_7F4A_7C15) ^ UInt64(index) ^ 0x5EED_F00D_CAFE_0000
    }

    static func fill(_ buffer: UnsafeMutableRawBufferPointer, sector: UInt64) {
        let words = buffer.count / 8
        for index in 0..<words {
            let sectorOfWord = sector + UInt64(index / (BlockRequest.sectorSize / 8))
            buffer.storeBytes(
                of: word(sector: sectorOfWord, index: index % 64),
                toByteOffset: index * 8,
                as: UInt64.self
            )
        }
    }

    static func matches(_ data: UnsafeRawBufferPointer, sector: UInt64, byteCount: Int) -> Bool {
        guard data.count == byteCount else { return false }
        for index in 0..<byteCount / 8 {
            let sectorOfWord = sector + UInt64(index / (BlockRequest.sectorSize / 8))
            if data.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self)
                != word(sector: sectorOfWord, index: index % 64)
            {
                return false
            }
        }
        return true
    }
}
