import Testing
import Virtqueue
import VirtqueueHeap

/// A serial-port device like the seed's example: it reads the chain's readable buffers and
/// writes back how many bytes it received, followed by the text reversed.
struct ReversingSerialDevice: DeviceComponent {
    static let name = "reversing-serial"

    init(configuration: DeviceConfiguration) {}

    mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var received: [UInt8] = []
        try queue.forEachReadable(in: request) { received += $0 }
        let reply = Array("\(received.count):".utf8) + received.reversed()
        return try reply.withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}

@Suite("Heap backend: the seed's use case")
struct SeedUseCaseTests {
    /// The eight steps of libvirtqueue's README, with the device on its own thread.
    @Test(arguments: [Features.all, [.eventIndex], [.indirectDescriptors], []])
    func eightStepsAcrossTwoThreads(features: Features) throws {
        let layout = try RegionLayout(queueSizes: [16], dataAreaSize: 64 * 256, features: features)
        let device = try HeapBackend.launch(ReversingSerialDevice.self, layout: layout)
        var driver = try device.makeDriverQueue(bufferSize: 256)
        for round in 0..<100 {
            // 1. a new available entry; 2. chain buffers to it.
            var chain = driver.makeChain()
            let words = ["round \(round) ", "hello ", "seL4"]
            for word in words { try driver.appendReadable(to: &chain, copying: Array(word.utf8)) }
            try driver.appendWritable(to: &chain, capacity: 128)
            // 3. kick the device.
            try driver.submit(chain)
            try driver.notifyIfNeeded()
            // 4–7 happen on the device thread. 8. take the used entry, iterate, free.
            try driver.waitForUsed()
            guard let used = try driver.takeUsed() else {
                Issue.record("waitForUsed returned but no chain was used")
                return
            }
            var reply: [UInt8] = []
            try driver.forEachSegment(of: used) { isWritable, bytes in
                if isWritable { reply += bytes }
            }
            let text = words.joined()
            #expect(String(decoding: reply, as: UTF8.self) == "\(text.utf8.count):" + String(text.reversed()))
            try driver.free(used)
        }
        #expect(driver.freeBufferCount == driver.bufferCount)
        #expect(driver.inFlightCount == 0)
        #expect(device.stop() == .finished)
    }

    /// Many chains in flight at once, batched: one kick per batch at most.
    @Test func batchedTrafficAcrossTwoThreads() throws {
        let layout = try RegionLayout(queueSizes: [64], dataAreaSize: 128 * 256, features: .all)
        let device = try HeapBackend.launch(ReversingSerialDevice.self, layout: layout)
        var driver = try device.makeDriverQueue(bufferSize: 256)
        var sent = 0
        var received = 0
        var kicks = 0
        let total = 20_000
        while received < total {
            while sent < total, driver.freeDescriptorCount >= 2, driver.freeBufferCount >= 2 {
                var chain = driver.makeChain()
                try driver.appendReadable(to: &chain, copying: Array("\(sent)".utf8))
                try driver.appendWritable(to: &chain, capacity: 32)
                try driver.submit(chain)
                sent += 1
            }
            if try driver.notifyIfNeeded() { kicks += 1 }
            try driver.waitForUsed()
            while let used = try driver.takeUsed() {
                #expect(used.writtenByteCount > 0)
                try driver.free(used)
                received += 1
            }
        }
        #expect(kicks <= total / 32 + 1, "\(kicks) kicks for \(total) chains")
        #expect(device.stop() == .finished)
    }
}

@Suite("Heap notifier")
struct HeapNotifierTests {
    @Test func aKickSentBeforeTheWaitIsNotLost() throws {
        let pair = HeapNotifier.makePair()
        try pair.driver.notify()
        try pair.device.wait()  // returns at once
    }

    @Test func kicksMergeIntoOneWakeUp() throws {
        let pair = HeapNotifier.makePair()
        for _ in 0..<10 { try pair.driver.notify() }
        try pair.device.wait()
        pair.driver.close()
        #expect(throws: VirtqueueError.self) { try pair.device.wait() }
    }

    @Test func aWaitWakesOnAKickFromAnotherThread() async throws {
        let pair = HeapNotifier.makePair()
        let waiter = Task.detached { try pair.device.wait() }
        try pair.driver.notify()
        try await waiter.value
    }

    @Test func aWaitEndsWhenThePeerCloses() async throws {
        let pair = HeapNotifier.makePair()
        let waiter = Task.detached { () -> VirtqueueError.Code? in
            do throws(VirtqueueError) {
                try pair.device.wait()
                return nil
            } catch {
                return error.code
            }
        }
        pair.driver.close()
        #expect(await waiter.value == VirtqueueError.Code.peerDied)
    }
}
