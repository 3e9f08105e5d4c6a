import Foundation
import Glibc
import Synchronization
import SystemPackage
import Testing
import Virtqueue
import VirtqueueHeap
import VirtqueueSandbox
import VirtqueueSharedMemory
import VirtqueueTestDevices

extension Level {
    /// Starts `Device` at this level serving `queues` of a region with `queueCount` queues.
    func launch<Device: DeviceComponent>(
        _ device: Device.Type,
        queues: [Int],
        queueCount: Int,
        dataAreaSize: Int = 64 * 1024
    ) throws -> any DeviceHandle {
        let layout = try RegionLayout(
            queueSizes: Array(repeating: 16, count: queueCount),
            dataAreaSize: dataAreaSize,
            features: .all
        )
        var options = LaunchOptions()
        options.executable = Self.deviceHost
        options.queues = queues
        switch self {
        case .heap: return try HeapBackend.launch(device, layout: layout, queues: queues)
        case .sharedMemory: return try SharedMemoryBackend.launch(device, layout: layout, options: options)
        case .sandbox: return try SandboxBackend.launch(device, layout: layout, options: options)
        }
    }
}

/// A `QueueTagDevice` request: the queue's tag, the sequence number, then `filler` bytes of the
/// tag's low byte.
func taggedRequest(queue: Int, sequence: UInt32, filler: Int = 24) -> [UInt8] {
    var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: queue), count: 8 + filler)
    bytes.withUnsafeMutableBytes { raw in
        raw.storeBytes(of: UInt32(queue).littleEndian, toByteOffset: 0, as: UInt32.self)
        raw.storeBytes(of: sequence.littleEndian, toByteOffset: 4, as: UInt32.self)
    }
    return bytes
}

/// A `QueueTagDevice` reply: the queue index, the sequence and the shared count.
func parseTagReply<R: GuestMemory & ~Copyable, N: Notifier>(
    _ used: borrowing UsedChain,
    on driver: borrowing DriverQueue<R, N>
) throws -> (queue: UInt32, sequence: UInt32, total: UInt64) {
    var reply = [UInt8](repeating: 0, count: 16)
    let count = try reply.withUnsafeMutableBytes { try driver.copyWrittenBytes(of: used, into: $0) }
    #expect(count == 16)
    return reply.withUnsafeBytes {
        (
            UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt32.self)),
            UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
            UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        )
    }
}

/// Submits one tagged request on `driver` and notifies.
func submitTagged<R: GuestMemory & ~Copyable, N: Notifier>(
    queue: Int,
    sequence: UInt32,
    on driver: inout DriverQueue<R, N>,
    notify: Bool = true
) throws {
    var chain = driver.makeChain()
    try driver.appendReadable(to: &chain, copying: taggedRequest(queue: queue, sequence: sequence))
    try driver.appendWritable(to: &chain, capacity: 16)
    _ = try driver.submit(chain)
    if notify { _ = try driver.notifyIfNeeded() }
}

/// Takes the next used chain, waiting for it, and returns its parsed reply.
func nextTagReply<R: GuestMemory & ~Copyable, N: Notifier>(
    on driver: inout DriverQueue<R, N>
) throws -> (queue: UInt32, sequence: UInt32, total: UInt64) {
    while true {
        if let used = try driver.takeUsed() {
            let reply = try parseTagReply(used, on: driver)
            try driver.free(used)
            return reply
        }
        try driver.waitForUsed()
    }
}

/// Runs `body(position)` on one thread per position and rethrows the first error.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
    let errors = Mutex<[any Error]>([])
    let group = DispatchGroup()
    for position in 0..<count {
        group.enter()
        Thread {
            do { try body(position) } catch { errors.withLock { $0.append(error) } }
            group.leave()
        }
        .start()
    }
    group.wait()
    if let first = errors.withLock({ $0.first }) { throw first }
}

/// One device serving several queues of one region, at every isolation level: each queue on a
/// thread of its own with a notifier pair and a pool of its own.
@Suite("Several queues per device", .serialized)
struct MultiQueueTests {
    @Test(
        "each queue carries its own requests, in order, with no cross-talk, all queues at once",
        arguments: Level.allCases
    )
    func trafficOnEveryQueue(level: Level) throws {
        let queues = [0, 1, 2]
        try traffic(on: try level.launch(QueueTagDevice.self, queues: queues, queueCount: 3), queues: queues)
    }

    func traffic(on device: some DeviceHandle, queues: [Int]) throws {
        do {
            try trafficOrThrow(on: device, queues: queues)
        } catch {
            throw device.explain(error)
        }
    }

    func trafficOrThrow(on device: some DeviceHandle, queues: [Int]) throws {
        #expect(device.queueIndices == queues)
        let perQueue = 300
        let batch = 8
        try onThreads(queues.count) { position in
            let queue = queues[position]
            var driver = try device.makeDriverQueue(queue: queue, bufferSize: 64)
            var sequence: UInt32 = 0
            var received: UInt32 = 0
            while received < perQueue {
                let count = min(batch, perQueue - Int(sequence))
                for _ in 0..<count {
                    try submitTagged(queue: queue, sequence: sequence, on: &driver, notify: false)
                    sequence += 1
                }
                _ = try driver.notifyIfNeeded()
                for _ in 0..<count {
                    let reply = try nextTagReply(on: &driver)
                    guard reply.queue == UInt32(queue), reply.sequence == received else {
                        throw QueueTagDevice.Mismatch(
                            description:
                                "queue \(queue) got the reply of queue \(reply.queue) request \(reply.sequence), expected request \(received)"
                        )
                    }
                    received += 1
                }
            }
        }
        #expect(device.stop() == .finished, "\(device.failure().map { "\($0)" } ?? "")")
    }

    @Test("the shared state is one for all the queues of a device", arguments: Level.allCases)
    func sharedStateIsShared(level: Level) throws {
        try sharedState(of: try level.launch(QueueTagDevice.self, queues: [1, 0], queueCount: 2))
    }

    func sharedState(of device: some DeviceHandle) throws {
        do {
            try sharedStateOrThrow(of: device)
        } catch {
            throw device.explain(error)
        }
    }

    func sharedStateOrThrow(of device: some DeviceHandle) throws {
        var first = try device.makeDriverQueue(queue: 1, bufferSize: 64)
        var second = try device.makeDriverQueue(queue: 0, bufferSize: 64)
        try submitTagged(queue: 1, sequence: 0, on: &first)
        #expect(try nextTagReply(on: &first).total == 1)
        try submitTagged(queue: 0, sequence: 0, on: &second)
        let reply = try nextTagReply(on: &second)
        #expect(reply.queue == 0)
        #expect(reply.total == 2)
        #expect(device.stop() == .finished)
    }

    @Test(
        "each queue's pool is its own share of the data area: a chain waiting on one queue survives a full pool's traffic on another",
        arguments: Level.allCases
    )
    func eachQueueHasItsOwnPool(level: Level) throws {
        let dataAreaSize = 4096
        try pools(of: try level.launch(QueueTagDevice.self, queues: [0, 1], queueCount: 2, dataAreaSize: dataAreaSize))
    }

    func pools(of device: some DeviceHandle) throws {
        do {
            try poolsOrThrow(of: device)
        } catch {
            throw device.explain(error)
        }
    }

    func poolsOrThrow(of device: some DeviceHandle) throws {
        let dataAreaSize = 4096
        let layout = try RegionLayout(queueSizes: [16, 16], dataAreaSize: dataAreaSize, features: .all)
        let shares = try [layout.dataAreaShare(0, of: 2), layout.dataAreaShare(1, of: 2)]
        #expect(shares == [0..<2048, 2048..<4096])
        var first = try device.makeDriverQueue(queue: 0, bufferSize: 64)
        var second = try device.makeDriverQueue(queue: 1, bufferSize: 64)
        #expect(first.bufferCount == 2048 / 64)
        #expect(second.bufferCount == 2048 / 64)
        // Queue 0's request waits, unannounced, in its pool while queue 1 uses every buffer of its
        // own; with one pool for both, queue 1's bytes would overwrite it and the device would
        // find another queue's filler in it.
        try submitTagged(queue: 0, sequence: 0, on: &first, notify: false)
        var sequence: UInt32 = 0
        for _ in 0..<3 {
            var submitted = 0
            while second.freeBufferCount >= 2 && second.freeDescriptorCount >= 2 {
                try submitTagged(queue: 1, sequence: sequence, on: &second, notify: false)
                sequence += 1
                submitted += 1
            }
            _ = try second.notifyIfNeeded()
            for _ in 0..<submitted { _ = try nextTagReply(on: &second) }
        }
        _ = try first.notifyIfNeeded()
        let reply = try nextTagReply(on: &first)
        #expect(reply.queue == 0 && reply.sequence == 0)
        // A pool range given explicitly is taken as it is.
        let explicit = try device.makeDriverQueue(queue: 1, bufferSize: 64, poolRange: 3072..<4096)
        #expect(explicit.bufferCount == 16)
        _ = consume explicit
        #expect(device.stop() == .finished, "\(device.failure().map { "\($0)" } ?? "")")
    }

    @Test("a device dying ends every queue's wait with peerDied", arguments: Level.allCases)
    func deathEndsEveryQueue(level: Level) throws {
        let queues = [0, 1, 2]
        try death(of: try level.launch(QueueTagDevice.self, queues: queues, queueCount: 3), queues: queues)
    }

    func death(of device: some DeviceHandle, queues: [Int]) throws {
        let served = Atomic<Int>(0)
        try onThreads(queues.count) { position in
            let queue = queues[position]
            var driver = try device.makeDriverQueue(queue: queue, bufferSize: 64)
            do {
                try submitTagged(queue: queue, sequence: 0, on: &driver)
                #expect(try nextTagReply(on: &driver).sequence == 0)
            } catch {
                throw device.explain(error)
            }
            // Every queue has served a request before any asks the device to die.
            served.add(1, ordering: .acquiringAndReleasing)
            while served.load(ordering: .acquiring) < queues.count { usleep(1000) }
            // The other queues' requests are held until queue 1 asks the device to throw; then
            // every queue's wait must end with peerDied. A queue with nothing in flight submits
            // again, so it always waits for something.
            var outcome: VirtqueueError?
            var sequence: UInt32 = 1
            do {
                while true {
                    if driver.inFlightCount == 0 {
                        let next =
                            queue == 1
                            ? QueueTagDevice.dieSequence : (sequence == 1 ? QueueTagDevice.holdSequence : sequence)
                        try submitTagged(queue: queue, sequence: next, on: &driver)
                        sequence += 1
                    }
                    if let used = try driver.takeUsed() {
                        try driver.free(used)
                        continue
                    }
                    try driver.waitForUsed()
                }
            } catch let error as VirtqueueError {
                outcome = error
            }
            #expect(
                outcome?.code == .peerDied || outcome?.cause == .peerDied,
                "queue \(queue): \(String(describing: outcome))"
            )
        }
        let failure = try #require(device.failure())
        #expect("\(failure)".contains("queue 1 was asked to die"), "\(failure)")
        #expect(device.stop() != .finished)
    }

    @Test(
        "a queue the device does not serve, or a list that repeats one, is refused by name",
        arguments: Level.allCases
    )
    func unservedQueuesAreRefused(level: Level) throws {
        try refusal(of: try level.launch(QueueTagDevice.self, queues: [2], queueCount: 3))
        #expect(throws: (any Error).self) { try level.launch(QueueTagDevice.self, queues: [1, 1], queueCount: 2) }
        #expect(throws: (any Error).self) { try level.launch(QueueTagDevice.self, queues: [0, 3], queueCount: 2) }
    }

    func refusal(of device: some DeviceHandle) throws {
        #expect(device.queueIndex == 2)
        #expect(device.notifier(forQueue: 0) == nil)
        do {
            _ = try device.makeDriverQueue(queue: 0)
            Issue.record("queue 0 is not served, yet a driver queue was built for it")
        } catch let error as VirtqueueError {
            #expect(error.code == .invalidConfiguration)
            #expect(error.message.contains("does not serve queue 0"), "\(error)")
        }
        var driver = try device.makeDriverQueue(bufferSize: 64)
        try submitTagged(queue: 2, sequence: 0, on: &driver)
        #expect(try nextTagReply(on: &driver).queue == 2)
        _ = consume driver
        device.stop()
    }
}

/// The rules on the queues a device serves, and on the handshake that names them, each planted.
@Suite("Several queues: the rules")
struct MultiQueueRuleTests {
    @Test(
        "a list of served queues that is empty, too long, out of range or repeats a queue is refused by name",
        arguments: [
            ([Int](), nil as Int?, "0 queues"), (Array(0..<65), nil, "65 queues"), ([65536], nil, "65536"),
            ([-1], nil, "-1"), ([0, 2, 0], nil, "queue 0 is listed twice"),
            ([1, 2], 2, "queue 2 is not one of the region's 2 queues"),
        ]
    )
    func servedQueueLists(queues: [Int], queueCount: Int?, named: String) {
        do {
            try RegionLayout.validateServedQueues(queues, queueCount: queueCount)
            Issue.record("\(queues) was accepted")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect(error.message.contains(named), "\(error)")
        }
    }

    @Test("shares of the data area: equal, 64-aligned, the last takes the rest; a share that does not exist is refused")
    func dataAreaShares() throws {
        let layout = try RegionLayout(queueSizes: [16, 16, 16], dataAreaSize: 1000, features: .all)
        #expect(try layout.dataAreaShare(0, of: 3) == 0..<320)
        #expect(try layout.dataAreaShare(1, of: 3) == 320..<640)
        #expect(try layout.dataAreaShare(2, of: 3) == 640..<1000)
        #expect(throws: VirtqueueError.self) { try layout.dataAreaShare(3, of: 3) }
        #expect(throws: VirtqueueError.self) { try layout.dataAreaShare(0, of: 0) }
        #expect(throws: VirtqueueError.self) { try layout.dataAreaShare(0, of: 16) }
    }

    @Test(
        "the device host refuses a handshake whose queue list is malformed, with exit 64 and the value named",
        arguments: [
            (["0:4:4"], "descriptor 4"), (["0:3:5"], "descriptor 3"), (["0:4:6"], "descriptor 6"),
            (["0:1:5"], "descriptor 1"), (["0:4"], "INDEX:KICK:CALL"), (["x"], "INDEX:KICK:CALL"),
            (["70000"], "INDEX:KICK:CALL"), (["1", "1:7:8"], "queue 1 is listed twice"),
            (["0:4:5", "1:7:4"], "descriptor 4"),
        ]
    )
    func malformedHandshake(queues: [String], named: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Level.deviceHost.string)
        process.arguments =
            [DeviceHost.deviceArgument, QueueTagDevice.name]
            + queues.flatMap { [DeviceHost.queueArgument, $0] }
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == DeviceHost.ExitCode.usage, "\(text)")
        #expect(text.contains(named), "\(text)")
    }
}

/// A sandboxed device that serves several queues runs under its policy with threads allowed, and
/// with nothing more than threads.
@Suite("Several queues in the sandbox", .serialized)
struct MultiQueueSandboxTests {
    /// Sends `call` to a `ForbiddenCallDevice` and returns what the call returned.
    func attempt<R: GuestMemory & ~Copyable, N: Notifier>(
        _ call: String,
        on driver: inout DriverQueue<R, N>
    ) throws -> Int64 {
        var chain = driver.makeChain()
        try driver.appendReadable(to: &chain, copying: Array(call.utf8))
        try driver.appendWritable(to: &chain, capacity: 8)
        _ = try driver.submit(chain)
        _ = try driver.notifyIfNeeded()
        while true {
            if let used = try driver.takeUsed() {
                var result: Int64 = 0
                _ = try withUnsafeMutableBytes(of: &result) { try driver.copyWrittenBytes(of: used, into: $0) }
                try driver.free(used)
                return Int64(littleEndian: result)
            }
            try driver.waitForUsed()
        }
    }

    @Test(
        "threads, never a process, and never a new SIGSYS handler: the forbidden call is named",
        arguments: [("fork", "clone"), ("sigaction-sigsys", "rt_sigaction"), ("openat", "openat")]
    )
    func onlyThreadsAreAdded(call: String, systemCall: String) throws {
        let device = try Level.sandbox.launch(ForbiddenCallDevice.self, queues: [0, 1], queueCount: 2)
        let sandboxed = try #require(device as? SandboxedDevice)
        #expect(sandboxed.policy == SandboxPolicy.deviceLoop.allowingThreads)
        #expect(sandboxed.policy.allowingThreads == sandboxed.policy, "adding it twice changes nothing")
        try attemptForbidden(call, named: systemCall, on: sandboxed)
    }

    func attemptForbidden(_ call: String, named systemCall: String, on device: SandboxedDevice) throws {
        var driver = try device.makeDriverQueue(queue: 1, bufferSize: 64)
        // Any other signal's action may be read (glibc's first thread start does so).
        #expect(try attempt("sigaction-sigusr1", on: &driver) == 0)
        #expect(throws: VirtqueueError.self) { _ = try attempt(call, on: &driver) }
        let failure = try #require(device.failure())
        guard case .forbiddenSystemCall(let name, _) = failure.termination else {
            Issue.record("\(failure)")
            return
        }
        #expect(name == systemCall)
    }

    @Test("the thread rules survive the policy's argument encoding; a malformed argument condition is refused")
    func threadRulesRoundTrip() throws {
        let policy = SandboxPolicy.deviceLoop.allowingThreads
        #expect(policy.rules.contains(.init("rt_sigaction", .unlessArgument(0, equals: 31))))
        #expect(SandboxPolicy(argumentEncoding: policy.argumentEncoding) == policy)
        #expect(
            SandboxPolicy(argumentEncoding: "rt_sigaction@ne=0:1f")?.rules == [
                .init("rt_sigaction", .unlessArgument(0, equals: 31))
            ]
        )
        #expect(SandboxPolicy(argumentEncoding: "rt_sigaction@ne=6:1f") == nil)
        #expect(SandboxPolicy(argumentEncoding: "rt_sigaction@ne=0") == nil)
        #expect(SandboxPolicy(argumentEncoding: "rt_sigaction@ne=0:zz") == nil)
    }
}
