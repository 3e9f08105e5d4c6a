import Testing
import Virtqueue
import VirtqueueSharedMemory

extension SharedMemoryTests {
    @Suite("Eventfd notifier")
    struct EventNotifierTests {
        @Test func aNotificationSentBeforeTheWaitIsNotLost() throws {
            let (driver, device) = try EventNotifier.makePair()
            try driver.notify()
            try driver.notify()
            try device.wait()  // merged: returns once, at once
            try device.notify()
            try driver.wait()
        }

        @Test func closingOneEndEndsThePeersWait() throws {
            let (driver, device) = try EventNotifier.makePair()
            driver.close()
            let error = #expect(throws: VirtqueueError.self) { try device.wait() }
            #expect(error?.code == .peerDied)
        }

        @Test func aPendingNotificationIsDeliveredBeforeThePeerDeath() throws {
            let (driver, device) = try EventNotifier.makePair()
            try driver.notify()
            driver.close()
            try device.wait()
            let error = #expect(throws: VirtqueueError.self) { try device.wait() }
            #expect(error?.code == .peerDied)
        }

        @Test func theLastCopyGoingAwayHangsUp() throws {
            var pair: (driver: EventNotifier, device: EventNotifier)? = try EventNotifier.makePair()
            let device = pair!.device
            pair = nil
            let error = #expect(throws: VirtqueueError.self) { try device.wait() }
            #expect(error?.code == .peerDied)
        }

        @Test func aWaitingThreadWakesWhenThePeerNotifies() async throws {
            let (driver, device) = try EventNotifier.makePair()
            let waiter = Task.detached { () throws in try device.wait() }
            try driver.notify()
            try await waiter.value
        }
    }
}
