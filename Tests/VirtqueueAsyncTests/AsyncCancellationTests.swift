import Dispatch
import Synchronization
import Testing
import Virtqueue
import VirtqueueAsync

/// Cancellation mid-flight: the chain comes back, the pool is whole again, nothing leaks.
@Suite(.timeLimit(.minutes(1))) struct AsyncCancellationTests {
    /// What the driver's task saw.
    struct DriverReport: Sendable {
        var cancelled = false
        var givenUpAfterCancel = 0
        var freeBuffers = 0
        var bufferCount = 0
        var inFlight = 0
        var givenUpAfterSettle = 0
    }

    /// The driver awaits a chain the device holds (a gate keeps it), and is cancelled: the
    /// await throws CancellationError, the submission is given up, and once the device
    /// returns the chain `settle()` frees it.
    struct CancelDriverAwait: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            let loop = try EventLoop()
            let epolls = Leaks.epollDescriptorCount()
            let gate = DispatchSemaphore(value: 0)
            let (taken, takenContinuation) = AsyncStream<Void>.makeStream()
            let first = Atomic<Bool>(true)
            let device = Task.detached {
                try await onThread {
                    try blockingEcho(region: pair.region, notifier: pair.device) {
                        // Hold the first request until the driver has been cancelled.
                        if first.exchange(false, ordering: .relaxed) {
                            takenContinuation.yield()
                            gate.wait()
                        }
                    }
                }
            }
            let driverTask = Task {
                var report = DriverReport()
                var driver = try AsyncDriverQueue(
                    DriverQueue(region: pair.region, notifier: pair.driver, bufferSize: 256),
                    loop: loop
                )
                report.bufferCount = driver.queue.bufferCount
                let submission = try driver.submit(echoChain(message(1), on: &driver))
                try driver.notifyIfNeeded()
                do {
                    let used = try await driver.completion(of: submission)
                    try driver.free(used)
                } catch is CancellationError {
                    report.cancelled = true
                }
                report.givenUpAfterCancel = driver.givenUpSubmissionCount
                gate.signal()
                try await driver.settle()
                report.givenUpAfterSettle = driver.givenUpSubmissionCount
                report.freeBuffers = driver.queue.freeBufferCount
                report.inFlight = driver.queue.inFlightCount
                return report
            }
            for await _ in taken { break }
            driverTask.cancel()
            let report = try await driverTask.value
            #expect(report.cancelled)
            #expect(report.givenUpAfterCancel == 1)
            #expect(report.givenUpAfterSettle == 0)
            #expect(report.freeBuffers == report.bufferCount)
            #expect(report.inFlight == 0)
            // The driver queue is gone: its registration left the loop.
            #expect(loop.registrationCount == 0)
            pair.closeDriver()
            try await device.value
            loop.shutdown()
            #expect(Leaks.epollDescriptorCount() == epolls - 1)
        }
    }

    @Test(arguments: AsyncBackend.allCases)
    func cancellingAnAwaitedCompletionGivesTheChainBack(_ backend: AsyncBackend) async throws {
        try await backend.run(CancelDriverAwait())
    }

    /// The device's handler is cancelled while it holds a request: the request is completed
    /// with 0 bytes written, so the blocking driver gets its chain back, and `serve` ends with
    /// CancellationError.
    struct CancelDeviceHandler: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            let (handling, handlingContinuation) = AsyncStream<Void>.makeStream()
            let served = Task {
                var device = try AsyncDeviceQueue(DeviceQueue(region: pair.region, notifier: pair.device))
                do {
                    try await device.serve { request, queue in
                        handlingContinuation.yield()
                        try await Task.sleep(for: .seconds(3600))
                        return request.writableByteCount
                    }
                } catch is CancellationError {
                    return device.queue.takenCount
                }
                return -1
            }
            let driver = Task.detached {
                try await onThread { () throws -> [Int] in
                    var driver = try DriverQueue(region: pair.region, notifier: pair.driver, bufferSize: 256)
                    var chain = driver.makeChain()
                    try driver.appendReadable(to: &chain, copying: message(2))
                    try driver.appendWritable(to: &chain, capacity: 64)
                    try driver.submit(chain)
                    try driver.notifyIfNeeded()
                    while true {
                        try driver.waitForUsed()
                        if let used = try driver.takeUsed() {
                            let written = used.writtenByteCount
                            try driver.free(used)
                            return [written, driver.freeBufferCount, driver.bufferCount, driver.inFlightCount]
                        }
                    }
                }
            }
            for await _ in handling { break }
            served.cancel()
            #expect(try await served.value == 0)
            let result = try await driver.value
            #expect(result[0] == 0)
            #expect(result[1] == result[2])
            #expect(result[3] == 0)
        }
    }

    @Test(arguments: AsyncBackend.allCases)
    func cancellingTheDeviceHandlerReturnsTheRequest(_ backend: AsyncBackend) async throws {
        try await backend.run(CancelDeviceHandler())
    }

    /// A device task cancelled while it sleeps for requests ends at once, having taken nothing.
    struct CancelDeviceWait: PairTest {
        func run<Region: MemoryRegion & Sendable, Notify: ReadinessNotifier>(_ pair: Pair<Region, Notify>) async throws
        {
            let loop = try EventLoop()
            let threads = Leaks.eventLoopThreadCount()
            let served = Task {
                var device = try AsyncDeviceQueue(DeviceQueue(region: pair.region, notifier: pair.device), loop: loop)
                do {
                    _ = try await device.nextRequest()
                } catch is CancellationError {
                    return (device.queue.takenCount, device.queue.cursor)
                }
                return (-1, device.queue.cursor)
            }
            served.cancel()
            let (taken, cursor) = try await served.value
            #expect(taken == 0)
            #expect(cursor == .start)
            #expect(loop.registrationCount == 0)
            loop.shutdown()
            #expect(Leaks.eventLoopThreadCount() == threads - 1)
        }
    }

    @Test(arguments: AsyncBackend.allCases)
    func cancellingAWaitingDeviceTakesNothing(_ backend: AsyncBackend) async throws {
        try await backend.run(CancelDeviceWait())
    }
}
