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
            let device = Task.detached {
                try await onThread { try blockingEcho(region: pair.region, notifier: pair.device) }
            }
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

    @Test(arguments: AsyncBackend.allCases)
    func submissionsBelongToTheirQueue(_ backend: AsyncBackend) async throws {
        try await backend.run(SubmissionsBelongToTheirQueue())
    }
}
