import Testing
import Virtqueue

/// Device requests held out of order: a tiny container for noncopyable values.
struct RequestStash: ~Copyable {
    let storage: UnsafeMutablePointer<DeviceRequest>
    let capacity: Int
    var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
    }

    mutating func push(_ request: consuming DeviceRequest) {
        (storage + count).initialize(to: request)
        count += 1
    }

    /// Removes and returns the request at `index`, moving the last one into its place.
    mutating func remove(at index: Int) -> DeviceRequest {
        let request = (storage + index).move()
        count -= 1
        if index != count { (storage + index).initialize(to: (storage + count).move()) }
        return request
    }

    func withRequest<R>(at index: Int, _ body: (borrowing DeviceRequest) throws -> R) rethrows -> R {
        try body(storage[index])
    }

    deinit {
        storage.deinitialize(count: count)
        storage.deallocate()
    }
}

/// A model-based test: random submit / take / complete / reclaim sequences with random chain
/// shapes, checked against a model of what should be in flight, for long enough that the
/// 16-bit ring indices wrap several times.
@Suite("Model-based property test")
struct ModelPropertyTests {
    struct Expected {
        var readable: [UInt8]
        var writableCapacity: Int
        var written: [UInt8]?
    }

    static let configurations: [(queueSize: Int, features: Features, seed: UInt64)] = [
        (1, [.eventIndex], 1),
        (4, .all, 2),
        (16, [.indirectDescriptors], 3),
        (128, .all, 4),
    ]

    @Test(arguments: configurations.indices)
    func randomOperationsKeepEveryInvariant(configuration: Int) throws {
        let (queueSize, features, seed) = Self.configurations[configuration]
        var random = SplitMix64(state: seed)
        let bufferSize = 128
        let bufferCount = max(queueSize * 2, 8)
        let layout = try RegionLayout(
            queueSizes: [queueSize],
            dataAreaSize: bufferCount * bufferSize,
            features: features
        )
        let region = try GuardedRegion(layout: layout)
        let notifiers = CountingNotifier.makePair()
        var driver = try DriverQueue(
            region: region,
            notifier: notifiers.driver,
            bufferSize: bufferSize,
            indirectThreshold: 3
        )
        var device = try DeviceQueue(region: region, notifier: notifiers.device)
        var held = RequestStash(capacity: queueSize)
        var model: [UInt16: Expected] = [:]
        var submitted = 0
        var reclaimed = 0
        let target = 70_000  // more than 65,536 chains: avail.idx and used.idx wrap

        while reclaimed < target {
            switch random.next() % 4 {
            case 0 where submitted < target:
                // Submit a random chain: 0–3 readable segments of random bytes, 0–2 writable.
                let readableCount = Int(random.next() % 4)
                let writableCount = readableCount == 0 ? 1 + Int(random.next() % 2) : Int(random.next() % 3)
                guard readableCount + writableCount <= queueSize || features.contains(.indirectDescriptors) else {
                    continue
                }
                var chain = driver.makeChain()
                var payload: [UInt8] = []
                var capacity = 0
                do {
                    for _ in 0..<readableCount {
                        let bytes = (0..<Int(random.next() % UInt64(bufferSize + 1))).map { _ in
                            UInt8(truncatingIfNeeded: random.next())
                        }
                        try driver.appendReadable(to: &chain, copying: bytes)
                        payload += bytes
                    }
                    for _ in 0..<writableCount {
                        let room = 1 + Int(random.next() % UInt64(bufferSize))
                        try driver.appendWritable(to: &chain, capacity: room)
                        capacity += room
                    }
                } catch {
                    // Out of descriptors, buffers or chain length: legal refusals; nothing may leak.
                    #expect([.ringFull, .poolExhausted, .chainTooLong].contains(error.code), "\(error)")
                    try driver.discard(chain)
                    continue
                }
                let id = try driver.submit(chain)
                #expect(model[id] == nil, "id \(id) handed out twice")
                model[id] = Expected(readable: payload, writableCapacity: capacity)
                submitted += 1
                if random.next() % 4 == 0 { try driver.notifyIfNeeded() }
            case 1:
                // The device takes a request and checks it against the model.
                guard held.count < queueSize, let request = try device.nextRequest() else { continue }
                let expected = try #require(model[request.id])
                var seen: [UInt8] = []
                try device.forEachReadable(in: request) { seen += $0 }
                #expect(seen == expected.readable, "payload of chain \(request.id) arrived damaged")
                #expect(request.writableByteCount == expected.writableCapacity)
                held.push(request)
            case 2:
                // The device completes a random held request, writing a random reply.
                guard held.count > 0 else { continue }
                let request = held.remove(at: Int(random.next() % UInt64(held.count)))
                let length = Int(random.next() % UInt64(request.writableByteCount + 1))
                let reply = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                let written = try reply.withUnsafeBytes { try device.scatter($0, into: request) }
                #expect(written == length)
                model[request.id]?.written = reply
                try device.complete(request, written: written)
                if random.next() % 4 == 0 { try device.notifyIfNeeded() }
            default:
                // The driver reclaims a used chain and checks the reply.
                guard let used = try driver.takeUsed() else { continue }
                let removed = model.removeValue(forKey: used.id)
                let expected = try #require(removed, "chain \(used.id) returned twice")
                let reply = try #require(expected.written, "chain \(used.id) returned before it was completed")
                #expect(used.writtenByteCount == reply.count)
                var received: [UInt8] = []
                var readable: [UInt8] = []
                try driver.forEachSegment(of: used) { isWritable, bytes in
                    if isWritable { received += bytes } else { readable += bytes }
                }
                #expect(received == reply, "reply of chain \(used.id) arrived damaged")
                #expect(readable == expected.readable)
                try driver.free(used)
                reclaimed += 1
            }
        }
        // Drain what is left: every chain comes back exactly once and the pool is whole again.
        while held.count > 0 {
            let request = held.remove(at: 0)
            model[request.id]?.written = []
            try device.complete(request, written: 0)
        }
        while let request = try device.nextRequest() {
            model[request.id]?.written = []
            try device.complete(request, written: 0)
        }
        while let used = try driver.takeUsed() {
            let removed = model.removeValue(forKey: used.id)
            #expect(removed != nil)
            try driver.free(used)
            reclaimed += 1
        }
        #expect(model.isEmpty, "chains never returned: \(model.keys.sorted())")
        #expect(reclaimed == submitted)
        #expect(submitted > 65_536)
        #expect(driver.inFlightCount == 0)
        #expect(driver.freeBufferCount == driver.bufferCount)
        #expect(driver.freeDescriptorCount == queueSize)
        #expect(device.takenCount == 0)
        #expect(driver.isBroken == false)
        #expect(device.isBroken == false)
        #expect(region.guardsIntact)
    }
}
