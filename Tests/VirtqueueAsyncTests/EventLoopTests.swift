import Testing
import Virtqueue
import VirtqueueAsync
import VirtqueueHeap
import VirtqueueTestDevices

/// The event loop and the submission table: what a caller can get wrong, and shutting down.
@Suite(.timeLimit(.minutes(1))) struct EventLoopTests {
    /// Shutting a loop down ends the waits in it with notifierFailed instead of leaving them asleep.
    struct ShutdownEndsWaits: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            let loop = try EventLoop()
            let (registered, registeredContinuation) = AsyncStream<Void>.makeStream()
            let waiting = Task {
                var device = try AsyncDeviceQueue(DeviceQueue(region: pair.region, notifier: pair.device), loop: loop)
                registeredContinuation.yield()
                do {
                    _ = try await device.nextRequest()
                } catch {
                    return (error as? VirtqueueError)?.code
                }
                return nil
            }
            for await _ in registered { break }
            loop.shutdown()
            #expect(try await waiting.value == .notifierFailed)
            #expect(throws: VirtqueueError.self) { _ = try loop.register(pair.driver) }
        }
    }

    @Test(arguments: AsyncBackend.allCases)
    func shutdownEndsTheWaits(_ backend: AsyncBackend) async throws {
        try await backend.run(ShutdownEndsWaits())
    }

    /// A notifier registered twice with one loop is refused by name, not trapped on.
    struct RegisterTwice: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            let loop = try EventLoop()
            defer { loop.shutdown() }
            let first = try loop.register(pair.driver)
            do {
                _ = try loop.register(pair.driver)
                Issue.record("a notifier was registered twice")
            } catch {
                #expect(error.code == .notifierFailed)
                #expect(error.message.contains("EPOLL_CTL_ADD"))
            }
            #expect(loop.registrationCount == 1)
            withExtendedLifetime(first) {}
        }
    }

    @Test(arguments: AsyncBackend.allCases)
    func registeringANotifierTwiceIsRefused(_ backend: AsyncBackend) async throws {
        try await backend.run(RegisterTwice())
    }

    /// A submission is redeemed once, and only by its own queue.
    struct SubmissionsBelongToTheirQueue: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            let device = startBlockingEcho(pair)
            var driver = try AsyncDriverQueue(DriverQueue(region: pair.region, notifier: pair.driver, bufferSize: 256))
            // A second queue of another ring, only to make a submission that is not the first's.
            let strangerNotifiers = try HeapEventNotifier.makePair()
            var stranger = try AsyncDriverQueue(
                DriverQueue(region: HeapRegion(layout: AsyncBackend.layout), notifier: strangerNotifiers.driver)
            )
            let foreign = try stranger.submit(echoChain(message(9), on: &stranger))

            let submission = try driver.submit(echoChain(message(4), on: &driver))
            try driver.notifyIfNeeded()
            await #expect(throws: VirtqueueError.self) { _ = try await driver.completion(of: foreign) }
            let used = try await driver.completion(of: submission)
            #expect(try reply(of: used, on: driver) == message(4))
            try driver.free(used)
            do {
                _ = try await driver.completion(of: submission)
                Issue.record("a submission was redeemed twice")
            } catch {
                #expect((error as? VirtqueueError)?.code == .notOwned)
            }
            #expect(driver.queue.freeBufferCount == driver.queue.bufferCount)
            pair.closeDriver()
            try await device.value
        }
    }

    /// A chain that came back for a submission nobody has asked for yet keeps its place while
    /// its head descriptor is reused by later submissions (the head is free once the chain is
    /// taken back; its buffers are not).
    struct ParkedChainOutlivesItsHead: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            let device = startBlockingEcho(pair)
            var driver = try AsyncDriverQueue(DriverQueue(region: pair.region, notifier: pair.driver, bufferSize: 256))
            var waiting: [(Submission, Int)] = []
            var heads: Set<UInt16> = []
            var reused = false
            // Each round: submit two, redeem the second (which parks the first), keep the first
            // waiting; the next rounds' submissions take the heads the parked chains gave up.
            for round in 0..<5 {
                let first = try driver.submit(echoChain(message(2 * round), on: &driver))
                let second = try driver.submit(echoChain(message(2 * round + 1), on: &driver))
                reused = reused || heads.contains(first.id) || heads.contains(second.id)
                heads.formUnion([first.id, second.id])
                try driver.notifyIfNeeded()
                let used = try await driver.completion(of: second)
                #expect(try reply(of: used, on: driver) == message(2 * round + 1))
                try driver.free(used)
                waiting.append((first, 2 * round))
            }
            #expect(reused, "no head was reused: the test did not exercise reuse")
            for (submission, index) in waiting {
                let used = try await driver.completion(of: submission)
                #expect(try reply(of: used, on: driver) == message(index))
                try driver.free(used)
            }
            #expect(driver.queue.freeBufferCount == driver.queue.bufferCount)
            pair.closeDriver()
            try await device.value
        }
    }

    @Test(arguments: AsyncBackend.allCases)
    func aParkedChainOutlivesItsHead(_ backend: AsyncBackend) async throws {
        try await backend.run(ParkedChainOutlivesItsHead())
    }

    @Test(arguments: AsyncBackend.allCases)
    func submissionsBelongToTheirQueue(_ backend: AsyncBackend) async throws {
        try await backend.run(SubmissionsBelongToTheirQueue())
    }
}
