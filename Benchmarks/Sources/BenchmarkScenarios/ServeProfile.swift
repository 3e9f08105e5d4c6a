public import Virtqueue
public import VirtqueueHeap

/// ``TouchDevice`` that ends the device's `serve` loop after `batch` requests by throwing
/// ``BatchServed`` (the request is still completed, so the queue stays usable). Lets one thread
/// drive `serve`.
public struct BatchDevice: DeviceComponent {
    public static let name = "benchmark-batch"
    /// `handle` only reads the payload and writes the reply: completions are published per run.
    public static let completesWithoutBlocking = true
    @usableFromInline var touch = TouchDevice()
    @usableFromInline var served = 0
    /// Requests to serve before `serve` returns.
    public var batch = 256

    /// Creates a device that ends `serve` every 256 requests.
    public init() {}

    /// Creates a device that ends `serve` every 256 requests; it needs no configuration.
    public init(configuration: DeviceConfiguration) {}

    /// Touches the request like ``TouchDevice``; throws ``BatchServed`` on every `batch`-th.
    /// Always inlined into the serving loop, as ``TouchDevice/handle(_:on:)`` is.
    @inlinable @inline(__always)
    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        let written = try touch.handle(request, on: queue)
        served &+= 1
        if served >= batch {
            served = 0
            throw BatchServed()
        }
        return written
    }
}

/// Thrown by ``BatchDevice`` to end a batch.
public struct BatchServed: Error {
    @usableFromInline init() {}
}

/// The device's `serve` loop on one thread, for instruction counts: the driver submits a batch
/// of 64-byte chains, `serve` handles them with ``TouchDevice`` and returns, the driver reclaims.
public struct ServeCycle: ~Copyable {
    @usableFromInline var driver: DriverQueue<HeapRegion, InlineNotifier>
    @usableFromInline var device: DeviceQueue<HeapRegion, InlineNotifier>

    /// Creates a queue of 256 entries with 64-byte buffers.
    ///
    /// - Throws: ``VirtqueueError`` if the queue cannot be set up.
    public init() throws(VirtqueueError) {
        let layout = try RegionLayout(queueSizes: [256], dataAreaSize: 256 * 64, features: .all)
        let region = try HeapRegion(layout: layout)
        let driver = try DriverQueue(region: region, notifier: InlineNotifier(), bufferSize: 64)
        let device = try DeviceQueue(region: region, notifier: InlineNotifier())
        self.driver = driver
        self.device = device
    }

    /// Serves `batches` batches of 256 requests; `generic` serves through an existential device,
    /// as a backend that picks the device type at run time does.
    ///
    /// - Throws: ``VirtqueueError`` or the device's error.
    public mutating func run(batches: Int, generic: Bool) throws {
        var concrete = BatchDevice()
        var existential: any DeviceComponent = BatchDevice()
        for _ in 0..<batches {
            for index in 0..<256 {
                var chain = driver.makeChain()
                try driver.appendReadable(to: &chain, count: 64) { Message.write(UInt64(index), into: $0) }
                try driver.submit(chain)
            }
            do {
                if generic {
                    try serveExistential(&existential)
                } else {
                    try device.serve(&concrete, spins: 0)
                }
            } catch is BatchServed {}
            while let used = try driver.takeUsed() { try driver.free(used) }
        }
    }

    @inline(never)
    mutating func serveExistential(_ device: inout any DeviceComponent) throws {
        try serveOpened(&device)
    }

    mutating func serveOpened<Device: DeviceComponent>(_ instance: inout Device) throws {
        try device.serve(&instance, spins: 0)
    }
}
