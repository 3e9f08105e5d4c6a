import Testing
import Virtqueue
import VirtqueueConformance

/// A driver and a device on one guarded region with VIRTIO_F_IN_ORDER, on either ring format,
/// with a writer to read the ring: the fixture of the in-order tests.
struct InOrderPair: ~Copyable {
    static let queueSize = 8
    /// The features of both formats; the packed ring adds `ringPacked`.
    static let features: Features = [.inOrder, .indirectDescriptors, .eventIndex]

    let format: RingFormat
    var driver: DriverQueue<GuardedRegion, CountingNotifier>
    var device: DeviceQueue<GuardedRegion, CountingNotifier>
    let ring: RingWriter
    let region: GuardedRegion
    /// The buffer IDs (heads) of the chains submitted through ``submit(tag:readable:publish:)``,
    /// in order.
    private(set) var heads: [UInt16] = []

    init(
        _ format: RingFormat,
        queueSize: Int = InOrderPair.queueSize,
        features: Features = InOrderPair.features,
        bufferSize: Int = 64,
        indirectThreshold: Int = 16
    ) throws {
        let layout = try RegionLayout(
            queueSizes: [queueSize],
            dataAreaSize: (6 * queueSize + 8) * bufferSize,
            features: format == .packed ? features.union(.ringPacked) : features
        )
        let region = try GuardedRegion(layout: layout)
        let (driverNotifier, deviceNotifier) = CountingNotifier.makePair()
        let driver = try DriverQueue(
            region: region,
            notifier: driverNotifier,
            bufferSize: bufferSize,
            indirectThreshold: indirectThreshold
        )
        let device = try DeviceQueue(region: region, notifier: deviceNotifier)
        self.driver = driver
        self.device = device
        ring = RingWriter(region: region, layout: layout)
        self.region = region
        self.format = format
    }

    /// Submits a chain of `readable` one-byte readable segments (the byte is `tag`) and one
    /// 16-byte writable segment.
    @discardableResult
    mutating func submit(tag: UInt8, readable: Int = 1, publish: Bool = true) throws -> UInt16 {
        var chain = driver.makeChain()
        for _ in 0..<readable { try driver.appendReadable(to: &chain, copying: [tag]) }
        try driver.appendWritable(to: &chain, capacity: 16)
        let id = try driver.submit(chain, publish: publish)
        heads.append(id)
        return id
    }

    /// Submits `count` chains of ``submit(tag:readable:publish:)`` tagged 0, 1, … and returns
    /// their IDs.
    mutating func submit(_ count: Int) throws -> [UInt16] {
        try (0..<count).map { try submit(tag: UInt8($0)) }
    }

    /// Takes every chain back: (id, written bytes, first written byte).
    mutating func takeAll() throws -> [(id: UInt16, written: Int, first: UInt8?)] {
        var taken: [(id: UInt16, written: Int, first: UInt8?)] = []
        while let used = try driver.takeUsed() {
            var first: UInt8?
            try driver.forEachSegment(of: used) { writable, bytes in
                if writable, first == nil, let byte = bytes.first { first = byte }
            }
            taken.append((used.id, used.writtenByteCount, first))
            try driver.free(used)
        }
        return taken
    }

    /// Takes `count` requests, to complete later in any order.
    mutating func takeRequests(_ count: Int) throws -> [Held] {
        try (0..<count).map { _ in Held(try device.requireRequest()) }
    }

    /// Fills a held request's writable room with `byte` and completes it with `written` bytes.
    mutating func complete(_ held: Held, byte: UInt8? = nil, written: Int, publish: Bool = true) throws {
        guard let request = held.request.take() else { throw TestFailure("request \(held.id) completed twice") }
        if let byte {
            try device.forEachWritable(in: request) { bytes in
                for index in bytes.indices { bytes[index] = byte }
            }
        }
        try device.complete(request, written: written, publish: publish)
    }

    /// Takes the next request, fills its writable room with `byte`, and completes it with
    /// `written` bytes.
    mutating func serve(byte: UInt8, written: Int, publish: Bool = true) throws {
        try complete(Held(try device.requireRequest()), byte: byte, written: written, publish: publish)
    }

    /// How many of the chains submitted through ``submit(tag:readable:publish:)`` the ring
    /// memory shows used: split, `used.idx`; packed, the used descriptors read from the first
    /// chain's position, each counting through the chain its ID names and the next one read at
    /// the head of the chain after that (the tests stay within the first lap, wrap counter 1).
    var usedCount: Int {
        if format == .split { return Int(ring.usedIndex) }
        var count = 0
        while count < heads.count {
            let descriptor = ring.packedDescriptor(Int(heads[count]))
            guard descriptor.flags & 0x8080 == 0x8080,
                let last = heads[count...].firstIndex(of: descriptor.id)
            else { break }
            count = last + 1
        }
        return count
    }

    /// The used entry at the place of the `k`th submitted chain — split, used-ring slot `k`;
    /// packed, the descriptor at the chain's head: (buffer ID, length).
    func usedEntry(_ k: Int) -> (id: UInt32, length: UInt32) {
        if format == .split { return ring.usedElement(slot: k) }
        let descriptor = ring.packedDescriptor(Int(heads[k]))
        return (UInt32(descriptor.id), descriptor.length)
    }

    /// Plants a recognisable entry at the place of the `k`th submitted chain, to prove the device
    /// leaves it alone: split, a used element 0xDEAD/0xBEEF in slot `k`; packed, nothing (the
    /// driver's own descriptor is there, and ``untouchedPlaces`` checks it).
    func plantMarker(_ k: Int) {
        if format == .split { ring.usedElement(slot: k, id: 0xDEAD, length: 0xBEEF) }
    }

    /// The submitted chains whose place still holds what was there before the device used the
    /// ring: split, the marker ``plantMarker(_:)`` planted; packed, the driver's available
    /// descriptor (ID = its position, `NEXT`, wrap counter 1; the chains here have more than one
    /// descriptor).
    var untouchedPlaces: [Int] {
        heads.indices.filter { k in
            if format == .split { return ring.usedElement(slot: k) == (0xDEAD, 0xBEEF) }
            let descriptor = ring.packedDescriptor(Int(heads[k]))
            return descriptor.flags == Self.availableWithNext && descriptor.id == heads[k]
        }
    }

    /// The submitted chains the ring does not show used yet: split, those at or past `used.idx`;
    /// packed, those whose head still has the driver's flags (`NEXT`, available with wrap
    /// counter 1) — a staged used descriptor has its ID and length written, not its flags.
    var unpublishedPlaces: [Int] {
        heads.indices.filter { k in
            if format == .split { return k >= Int(ring.usedIndex) }
            return ring.packedDescriptor(Int(heads[k])).flags == Self.availableWithNext
        }
    }

    /// A packed first descriptor of a chain of more than one, available with wrap counter 1.
    static let availableWithNext: UInt16 = 0x0081
}

/// A request held for a later completion.
final class Held {
    var request: DeviceRequest?
    let id: UInt16
    init(_ request: consuming DeviceRequest) {
        id = request.id
        self.request = .some(request)
    }
}
