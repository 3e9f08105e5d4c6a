import Synchronization
import Testing
import Virtqueue
import VirtqueueConformance

/// Notification suppression (virtio 1.x §2.7.7 and §2.7.10), with VIRTIO_F_EVENT_IDX and with
/// the NO_NOTIFY / NO_INTERRUPT flags, counted kick by kick.
@Suite("Notification suppression")
struct NotificationTests {
    /// Both suppression modes on both ring formats.
    static let modes: [Features] = [
        [.eventIndex, .indirectDescriptors], [.indirectDescriptors],
        [.ringPacked, .eventIndex, .indirectDescriptors], [.ringPacked, .indirectDescriptors],
    ]

    struct Pair: ~Copyable {
        var driver: DriverQueue<GuardedRegion, CountingNotifier>
        var device: DeviceQueue<GuardedRegion, CountingNotifier>
        let notifiers: (driver: CountingNotifier, device: CountingNotifier)
        let ring: RingWriter
    }

    func makePair(features: Features, queueSize: Int = 64) throws -> Pair {
        let layout = try RegionLayout(queueSizes: [queueSize], dataAreaSize: 128 * 64, features: features)
        let region = try GuardedRegion(layout: layout)
        let notifiers = CountingNotifier.makePair()
        return Pair(
            driver: try DriverQueue(region: region, notifier: notifiers.driver, bufferSize: 64),
            device: try DeviceQueue(region: region, notifier: notifiers.device),
            notifiers: notifiers,
            ring: RingWriter(region: region, layout: layout)
        )
    }

    func submitOne(_ driver: inout DriverQueue<GuardedRegion, CountingNotifier>, byte: UInt8) throws {
        var chain = driver.makeChain()
        try driver.appendReadable(to: &chain, copying: [byte])
        try driver.appendWritable(to: &chain, capacity: 8)
        try driver.submit(chain)
    }

    /// The device drains every available request, completing each with one byte written.
    func drain(_ device: inout DeviceQueue<GuardedRegion, CountingNotifier>) throws -> Int {
        var served = 0
        while let request = try device.nextRequest() {
            try device.complete(request, written: 1)
            served += 1
        }
        return served
    }

    /// Whether the device's wait would now block: it published that it is going to sleep.
    func deviceWouldSleep(_ device: inout DeviceQueue<GuardedRegion, CountingNotifier>) -> Bool {
        do {
            // A kick left pending from earlier wakes the first wait spuriously; the second blocks.
            for _ in 0..<2 { try device.waitForRequests(spins: 0) }
            return false
        } catch {
            return error.code == .notifierFailed
        }
    }

    /// Two sides that poll and never wait (a busy-polled round trip): under EVENT_IDX each side
    /// starts as if it had armed at its position, so only the first publication each way
    /// notifies — on the packed ring too, whose zeroed event-suppression structure reads ENABLE
    /// (every publication notified, two kicks per round trip, until the side slept once).
    /// Without EVENT_IDX nothing suppresses until a side has slept: every one notifies.
    @Test(arguments: modes)
    func sidesThatNeverSleepAreNotifiedOnceUnderEventIndex(features: Features) throws {
        var pair = try makePair(features: features)
        let rounds = 100
        for round in 0..<rounds {
            try submitOne(&pair.driver, byte: UInt8(truncatingIfNeeded: round))
            _ = try pair.driver.notifyIfNeeded()
            #expect(try drain(&pair.device) == 1)
            _ = try pair.device.notifyIfNeeded()
            guard let used = try pair.driver.takeUsed() else {
                Issue.record("round \(round): the chain did not come back")
                return
            }
            try pair.driver.free(used)
        }
        // A stale packed event names a position and one wrap bit, so the publications cross it
        // again every second lap (each chain here is two descriptors, the queue 64): one more
        // notification per 128 descriptors, as harmless as the split ring's one per 2^16.
        let laps = features.contains(.ringPacked) ? 2 * rounds / (2 * 64) : 0
        let expected = features.contains(.eventIndex) ? 1 + laps : rounds
        #expect(pair.notifiers.driver.kickCount == expected, "the driver's kicks to a polling device")
        #expect(pair.notifiers.device.kickCount == expected, "the device's kicks to a polling driver")
    }

    @Test(arguments: modes)
    func burstOf32WhileTheDeviceIsAwakeCostsOneKick(features: Features) throws {
        var pair = try makePair(features: features)
        try submitOne(&pair.driver, byte: 0)
        #expect(try pair.driver.notifyIfNeeded(), "the device starts asleep: the first submission kicks")
        try pair.device.waitForRequests(spins: 0)  // woken by the kick: now awake and polling
        for byte in 1..<32 {
            try submitOne(&pair.driver, byte: UInt8(byte))
            #expect(try pair.driver.notifyIfNeeded() == false)
        }
        #expect(pair.notifiers.driver.kickCount == 1)
        #expect(try drain(&pair.device) == 32)
    }

    @Test(arguments: modes)
    func noKickIsLostWhenTheDeviceGoesToSleep(features: Features) throws {
        var pair = try makePair(features: features)
        for byte in 0..<32 { try submitOne(&pair.driver, byte: UInt8(byte)) }
        try pair.driver.notifyIfNeeded()
        try pair.device.waitForRequests(spins: 0)
        #expect(try drain(&pair.device) == 32)
        while let used = try pair.driver.takeUsed() { try pair.driver.free(used) }
        let sleeps = deviceWouldSleep(&pair.device)
        #expect(sleeps)
        if features.contains(.ringPacked) {
            // 32 chains of 2 descriptors went round the ring of 64 once: the device waits at
            // position 0 with wrap counter 0.
            let waiting: PackedEventSuppression =
                features.contains(.eventIndex)
                ? .descriptor(PackedRingPosition(index: 0, wrapCounter: false)) : .enable
            #expect(pair.ring.deviceEventSuppression == waiting, "the device asks to hear of its next descriptor")
        } else if features.contains(.eventIndex) {
            #expect(pair.ring.availableEvent == 32, "avail_event names the next index the device waits for")
        } else {
            #expect(pair.ring.usedFlags == 0, "VIRTQ_USED_F_NO_NOTIFY is clear while the device sleeps")
        }
        let kicksBefore = pair.notifiers.driver.kickCount
        try submitOne(&pair.driver, byte: 99)
        #expect(try pair.driver.notifyIfNeeded(), "the device sleeps: this submission must kick")
        #expect(pair.notifiers.driver.kickCount == kicksBefore + 1)
        try pair.device.waitForRequests(spins: 0)
        #expect(try drain(&pair.device) == 1)
    }

    @Test(arguments: modes)
    func deviceSetsNoNotifyWhileAwake(features: Features) throws {
        var pair = try makePair(features: features)
        try submitOne(&pair.driver, byte: 1)
        try pair.driver.notifyIfNeeded()
        try pair.device.waitForRequests(spins: 0)
        if features.contains(.ringPacked) {
            #expect(pair.ring.deviceEventSuppression == .disable, "DISABLE while the device polls")
        } else if !features.contains(.eventIndex) {
            #expect(pair.ring.usedFlags == 1, "VIRTQ_USED_F_NO_NOTIFY is set while the device polls")
        }
        #expect(try drain(&pair.device) == 1)
    }

    @Test(arguments: modes)
    func completionsWhileTheDriverPollsCostOneInterrupt(features: Features) throws {
        var pair = try makePair(features: features)
        for byte in 0..<32 { try submitOne(&pair.driver, byte: UInt8(byte)) }
        try pair.driver.notifyIfNeeded()
        // First completion: the driver has not started polling, so it gets an interrupt.
        let first = try pair.device.requireRequest()
        try pair.device.complete(first, written: 1)
        #expect(try pair.device.notifyIfNeeded())
        try pair.driver.waitForUsed(spins: 0)  // woken: now polling
        for _ in 1..<32 {
            let request = try pair.device.requireRequest()
            try pair.device.complete(request, written: 1)
            #expect(try pair.device.notifyIfNeeded() == false)
        }
        #expect(pair.notifiers.device.kickCount == 1)
        var reclaimed = 0
        while let used = try pair.driver.takeUsed() {
            try pair.driver.free(used)
            reclaimed += 1
        }
        #expect(reclaimed == 32)
        #expect(pair.driver.freeBufferCount == pair.driver.bufferCount)
    }

    @Test(arguments: modes)
    func noInterruptIsLostWhenTheDriverGoesToSleep(features: Features) throws {
        var pair = try makePair(features: features)
        for byte in 0..<2 { try submitOne(&pair.driver, byte: UInt8(byte)) }
        let first = try pair.device.requireRequest()
        try pair.device.complete(first, written: 1)
        try pair.device.notifyIfNeeded()
        let used = try pair.driver.requireUsed()
        try pair.driver.free(used)
        // The driver now waits for the second chain: it must publish that it sleeps.
        do {
            for _ in 0..<2 { try pair.driver.waitForUsed(spins: 0) }
            Issue.record("the driver's wait should block")
        } catch {
            #expect(error.code == .notifierFailed)
        }
        let second = try pair.device.requireRequest()
        try pair.device.complete(second, written: 1)
        #expect(try pair.device.notifyIfNeeded(), "the driver sleeps: this completion must interrupt it")
    }

    @Test func driverUsesAnIndirectTableForLongChains() throws {
        let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 32 * 128, features: .all)
        let region = try GuardedRegion(layout: layout)
        var driver = try DriverQueue(
            region: region,
            notifier: CountingNotifier(),
            bufferSize: 128,
            indirectThreshold: 2
        )
        var device = try DeviceQueue(region: region, notifier: CountingNotifier())
        var chain = driver.makeChain()
        for byte in 0..<5 { try driver.appendReadable(to: &chain, copying: [UInt8](repeating: UInt8(byte), count: 10)) }
        try driver.appendWritable(to: &chain, capacity: 64)
        #expect(chain.isIndirect == true)
        try driver.submit(chain)
        #expect(driver.freeDescriptorCount == 7, "an indirect chain takes one descriptor")
        let request = try device.requireRequest()
        #expect(request.segmentCount == 6)
        #expect(request.readableByteCount == 50)
        var bytes: [UInt8] = []
        try device.forEachReadable(in: request) { bytes += $0 }
        #expect(bytes == (0..<5).flatMap { [UInt8](repeating: UInt8($0), count: 10) })
        try device.complete(request, written: 64)
        let used = try driver.requireUsed()
        #expect(used.writtenByteCount == 64)
        #expect(driver.freeDescriptorCount == 8)
        try driver.free(used)
        #expect(driver.freeBufferCount == driver.bufferCount)
    }

    @Test func driverSwitchesToIndirectWhenDescriptorsRunOut() throws {
        let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 32 * 128, features: .all)
        let region = try GuardedRegion(layout: layout)
        var driver = try DriverQueue(region: region, notifier: CountingNotifier(), bufferSize: 128)
        var device = try DeviceQueue(region: region, notifier: CountingNotifier())
        var first = driver.makeChain()
        for _ in 0..<6 { try driver.appendWritable(to: &first, capacity: 16) }
        try driver.submit(first)
        var second = driver.makeChain()
        for _ in 0..<2 { try driver.appendWritable(to: &second, capacity: 16) }
        #expect(driver.freeDescriptorCount == 0)
        #expect(second.isIndirect == false)
        // Every descriptor is taken: the third segment moves the chain into an indirect table.
        for _ in 0..<3 { try driver.appendWritable(to: &second, capacity: 16) }
        #expect(second.isIndirect == true)
        #expect(driver.freeDescriptorCount == 1)
        try driver.submit(second)
        for expected in [6, 5] {
            let request = try device.requireRequest()
            #expect(request.segmentCount == expected)
            #expect(request.writableByteCount == 16 * expected)
            try device.complete(request, written: 16)
        }
        for _ in 0..<2 { try driver.free(try driver.requireUsed()) }
        #expect(driver.freeDescriptorCount == 8)
        #expect(driver.freeBufferCount == driver.bufferCount)
    }

    @Test func withoutIndirectLongChainsStayDirect() throws {
        let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 32 * 64, features: [.eventIndex])
        let region = try GuardedRegion(layout: layout)
        var driver = try DriverQueue(region: region, notifier: CountingNotifier(), bufferSize: 64, indirectThreshold: 1)
        var chain = driver.makeChain()
        for _ in 0..<8 { try driver.appendWritable(to: &chain, capacity: 16) }
        #expect(chain.isIndirect == false)
        #expect(driver.freeDescriptorCount == 0)
        try driver.discard(chain)
    }

    /// A notifier whose peer is gone: a notification fails as a notifier on sockets fails once the
    /// peer's end has closed (`EPIPE`), and so does a wait.
    final class GoneNotifier: Notifier, Sendable {
        let notifications = Atomic<Int>(0)
        let waits = Atomic<Int>(0)

        func notify() throws(VirtqueueError) {
            notifications.add(1, ordering: .relaxed)
            throw VirtqueueError(.peerDied, "the peer closed its end")
        }

        func wait() throws(VirtqueueError) {
            waits.add(1, ordering: .relaxed)
            throw VirtqueueError(.peerDied, "the peer closed its end")
        }
    }

    /// A notification that finds the device gone breaks the driver's queue, as a wait does: the
    /// chain in flight comes back abandoned.
    @Test(arguments: modes)
    func aNotificationThatFindsTheDeviceGoneBreaksTheDriversQueue(features: Features) throws {
        let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 8 * 64, features: features)
        var driver = try DriverQueue(
            region: try GuardedRegion(layout: layout),
            notifier: GoneNotifier(),
            bufferSize: 64
        )
        var chain = driver.makeChain()
        try driver.appendReadable(to: &chain, copying: [1])
        try driver.appendWritable(to: &chain, capacity: 8)
        try driver.submit(chain)
        let error = #expect(throws: VirtqueueError.self) { try driver.notifyIfNeeded() }
        #expect(error?.code == .peerDied)
        let broken = driver.isBroken
        #expect(broken)
        let abandoned = driver.takeAbandoned()?.status
        #expect(abandoned == .abandoned(.peerDied))
    }

    /// A device whose notification finds the driver gone stops serving as it does when its wait
    /// finds the driver gone: `serve` returns, having completed the request in hand.
    @Test(arguments: modes)
    func aDeviceStopsServingWhenItsNotificationFindsTheDriverGone(features: Features) throws {
        let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 8 * 64, features: features)
        let region = try GuardedRegion(layout: layout)
        var driver = try DriverQueue(region: region, notifier: CountingNotifier(), bufferSize: 64)
        let gone = GoneNotifier()
        var device = try DeviceQueue(region: region, notifier: gone)
        try submitOne(&driver, byte: 7)
        var echo = OneByteDevice()
        try device.serve(&echo, spins: 4)
        #expect(echo.served == 1)
        #expect(gone.notifications.load(ordering: .relaxed) == 1)
        #expect(gone.waits.load(ordering: .relaxed) == 0)
        let broken = device.isBroken
        #expect(broken)
        let written = try driver.takeUsed()?.writtenByteCount
        #expect(written == 1)
    }
}

/// Answers every request with one byte, and counts them.
struct OneByteDevice: DeviceComponent {
    static let name = "one-byte"
    var served = 0

    init() {}

    init(configuration: DeviceConfiguration) {}

    mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        served += 1
        return try [UInt8(1)].withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}
