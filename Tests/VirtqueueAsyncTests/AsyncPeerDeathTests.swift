import Glibc
import Testing
import Virtqueue
import VirtqueueAsync
import VirtqueueSandbox
import VirtqueueSharedMemory
import VirtqueueTestDevices

/// The peer's death ends the async sequence and the awaits with peerDied; a sandbox that
/// forbids threads refuses an async device at start-up.
@Suite(.timeLimit(.minutes(1))) struct AsyncPeerDeathTests {
    /// The driver hangs up while the async device sleeps for requests: serve ends with peerDied.
    struct DriverHangsUp: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            let served = startAsyncEcho(pair)
            try await onThread {
                var driver = try DriverQueue(region: pair.region, notifier: pair.driver, bufferSize: 256)
                _ = try blockingRoundTrip(message(3), on: &driver)
                pair.closeDriver()
            }
            #expect(try await served.value.code == .peerDied)
        }
    }

    @Test(arguments: AsyncBackend.allCases)
    func driverDeathEndsTheServingLoop(_ backend: AsyncBackend) async throws {
        try await backend.run(DriverHangsUp())
    }

    /// The device hangs up while 4 chains are in flight: every await ends with peerDied, the chains come back
    /// to the pool, and later calls say the same.
    struct DeviceHangsUp: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            var driver = try AsyncDriverQueue(DriverQueue(region: pair.region, notifier: pair.driver, bufferSize: 256))
            var submissions: [Submission] = []
            for index in 0..<4 {
                submissions.append(try driver.submit(echoChain(message(index), on: &driver)))
            }
            try driver.notifyIfNeeded()
            // The device hangs up without taking any.
            pair.closeDevice()
            for submission in submissions {
                await #expect(throws: VirtqueueError.self) {
                    _ = try await driver.completion(of: submission)
                }
            }
            do {
                _ = try await driver.completion(of: submissions[0])
                Issue.record("a completion was handed over after the device died")
            } catch {
                #expect((error as? VirtqueueError)?.code == .peerDied)
            }
            #expect(driver.queue.freeBufferCount == driver.queue.bufferCount)
            #expect(driver.queue.inFlightCount == 0)
        }
    }

    @Test(arguments: AsyncBackend.allCases)
    func deviceDeathEndsTheAwaits(_ backend: AsyncBackend) async throws {
        try await backend.run(DeviceHangsUp())
    }

    /// A blocking device process killed with SIGKILL while the async driver awaits: the pidfd
    /// says so, and the await ends with peerDied.
    @Test func killedDeviceProcessEndsTheAwait() async throws {
        let process = try TestExecutables.launch(EchoDevice.self, async: false)
        var driver = try AsyncDriverQueue(process.makeDriverQueue(bufferSize: 256))
        _ = kill(process.processID, SIGKILL)
        var code: VirtqueueError.Code?
        do {
            // Until the kernel has reaped it the device may still answer: keep asking.
            for index in 0..<100_000 {
                let submission = try driver.submit(echoChain(message(index), on: &driver))
                // A kick may already find the device gone; the await then reports it.
                _ = try? driver.notifyIfNeeded()
                let used = try await driver.completion(of: submission)
                try driver.free(used)
            }
        } catch {
            code = (error as? VirtqueueError)?.code
        }
        #expect(code == .peerDied)
        #expect(driver.queue.freeBufferCount == driver.queue.bufferCount)
        _ = process.stop()
    }

    /// `SandboxPolicy.deviceLoop` forbids threads: the async device host stops at start-up and
    /// the launch fails with a message naming the async API and the calls missing — no SIGSYS.
    @Test func sandboxForbiddingThreadsRefusesAnAsyncDevice() throws {
        var options = LaunchOptions()
        options.executable = TestExecutables.asyncHost
        do {
            let device = try SandboxBackend.launch(EchoDevice.self, layout: AsyncBackend.layout, options: options)
            _ = device.stop()
            Issue.record("an async device started under SandboxPolicy.deviceLoop")
        } catch {
            let text = "\(error)"
            #expect(text.contains("async API"), "\(text)")
            #expect(text.contains("clone3 or clone(CLONE_THREAD)"), "\(text)")
            #expect(!text.contains("SIGSYS") && !text.contains("forbidden system call"), "\(text)")
        }
    }

    /// What a policy must allow for threads, as the device host checks it.
    @Test func threadRequirementsOfAPolicy() {
        #expect(
            SandboxPolicy.deviceLoop.callsMissingForThreads == [
                "clone3 or clone(CLONE_THREAD)", "futex", "epoll_create1", "epoll_ctl", "eventfd2",
                "epoll_wait or epoll_pwait",
            ]
        )
        let threads = SandboxPolicy.deviceLoop.allowing(
            .init("clone", .withFlags(argument: 0, mask: 0x10000)),
            .init("futex"),
            .init("epoll_create1"),
            .init("epoll_ctl"),
            .init("eventfd2"),
            .init("epoll_pwait")
        )
        #expect(threads.callsMissingForThreads.isEmpty)
        // clone only with a flag pthread_create does not pass (CLONE_CHILD_SETTID) is no thread.
        var withoutThreads = threads
        withoutThreads.rules.removeAll { $0.systemCall == "clone" }
        withoutThreads.rules.append(.init("clone", .withFlags(argument: 0, mask: 0x0100_0000)))
        #expect(withoutThreads.callsMissingForThreads == ["clone3 or clone(CLONE_THREAD)"])
    }
}
