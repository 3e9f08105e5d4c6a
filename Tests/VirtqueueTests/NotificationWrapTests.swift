import Synchronization
import Testing
import Virtqueue
import VirtqueueHeap

/// Regression tests for the lost wake-up the SPIN model (docs/model/notification.pml) found:
/// `notifyIfNeeded` compared 16-bit indices, so after exactly 2^16 submissions (or
/// completions) since the previous check the new index equalled the old one and the peer,
/// asleep and waiting for exactly that notification, was never woken. Under EVENT_IDX any
/// distance of 2^16 or more could be misjudged the same way.
@Suite
struct NotificationWrapTests {
    /// Counts kicks; a wait stands for "the thread goes to sleep": it has already published its
    /// suppression state (the real `waitForPeer` does that first), so it only reports back.
    struct SleepingNotifier: Notifier {
        let kicks = Counter()

        final class Counter: Sendable {
            let value = Atomic(0)
        }

        func notify() throws(VirtqueueError) {
            kicks.value.add(1, ordering: .relaxed)
        }

        func wait() throws(VirtqueueError) {
            throw VirtqueueError(.notifierFailed, "this thread would sleep now")
        }
    }

    static let wrap = 1 << 16

    /// A driver and a device on one region, both run from the test's thread.
    struct Pair: ~Copyable {
        var driver: DriverQueue<HeapRegion, SleepingNotifier>
        var device: DeviceQueue<HeapRegion, SleepingNotifier>
        let toDevice = SleepingNotifier()
        let toDriver = SleepingNotifier()

        init(features: Features) throws {
            let layout = try RegionLayout(queueSizes: [4], dataAreaSize: 4 * 64, features: features)
            let region = try HeapRegion(layout: layout)
            let driver = try DriverQueue(region: region, notifier: toDevice, bufferSize: 64)
            let device = try DeviceQueue(region: region, notifier: toDriver)
            self.driver = driver
            self.device = device
        }

        var kicks: Int { toDevice.kicks.value.load(ordering: .relaxed) }
        var interrupts: Int { toDriver.kicks.value.load(ordering: .relaxed) }

        /// Submits one chain, and has the device take it.
        mutating func submitAndTake() throws -> DeviceRequest? {
            var chain = driver.makeChain()
            try driver.appendWritable(to: &chain, capacity: 16)
            try driver.submit(chain)
            return try device.nextRequest()
        }

        /// One chain there and back, with no notification checks on the way.
        mutating func roundTrip() throws {
            guard let request = try submitAndTake() else { throw VirtqueueError(.emptyChain, "no request") }
            try device.complete(request, written: 0)
            guard let used = try driver.takeUsed() else { throw VirtqueueError(.emptyChain, "no used chain") }
            try driver.free(used)
        }
    }

    @Test(arguments: [Features(), .eventIndex])
    func deviceNotifiesAfterTwoToTheSixteenCompletionsWithoutACheck(features: Features) throws {
        var pair = try Pair(features: features)
        for _ in 1..<Self.wrap {
            try pair.roundTrip()
        }
        // The 2^16-th chain: the device takes it, the driver goes to sleep waiting for it…
        guard let request = try pair.submitAndTake() else {
            Issue.record("the device saw no request")
            return
        }
        #expect(throws: VirtqueueError.self) { try pair.driver.waitForUsed(spins: 0) }
        // …and the device completes it: used.idx is back where the device's last check left it.
        try pair.device.complete(request, written: 0)
        #expect(try pair.device.notifyIfNeeded(), "the sleeping driver was not notified")
        #expect(pair.interrupts == 1)
    }

    @Test(arguments: [Features(), .eventIndex])
    func driverKicksAfterTwoToTheSixteenSubmissionsWithoutACheck(features: Features) throws {
        var pair = try Pair(features: features)
        for _ in 1..<Self.wrap {
            try pair.roundTrip()
        }
        // The device has seen everything and goes to sleep…
        #expect(throws: VirtqueueError.self) { try pair.device.waitForRequests(spins: 0) }
        // …and the 2^16-th submission since the driver's last check brings avail.idx back to it.
        var chain = pair.driver.makeChain()
        try pair.driver.appendWritable(to: &chain, capacity: 16)
        try pair.driver.submit(chain)
        #expect(try pair.driver.notifyIfNeeded(), "the sleeping device was not kicked")
        #expect(pair.kicks == 1)
    }

    /// The guard is no licence to kick more: a device that stays awake is kicked once, for the
    /// first chain, however many follow.
    @Test(arguments: [Features(), .eventIndex])
    func anAwakePeerIsKickedOnce(features: Features) throws {
        var pair = try Pair(features: features)
        for round in 0..<1000 {
            var chain = pair.driver.makeChain()
            try pair.driver.appendWritable(to: &chain, capacity: 16)
            try pair.driver.submit(chain)
            _ = try pair.driver.notifyIfNeeded()
            // Awake: the wait sees the request at once (and, with flags, sets NO_NOTIFY).
            if round == 0 { try pair.device.waitForRequests(spins: 0) }
            guard let request = try pair.device.nextRequest() else {
                Issue.record("the device saw no request")
                return
            }
            try pair.device.complete(request, written: 0)
            guard let used = try pair.driver.takeUsed() else {
                Issue.record("the driver saw no used chain")
                return
            }
            try pair.driver.free(used)
        }
        #expect(pair.kicks == 1)
    }
}
