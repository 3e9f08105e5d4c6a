import Foundation
import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueHeap
import VirtqueueSharedMemory
import VirtqueueTestDevices

/// A device type that the test device host does not host.
struct UnhostedDevice: DeviceComponent {
    static let name = "unhosted"
    init(configuration: DeviceConfiguration) {}
    mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int { 0 }
}

/// Sends each message through `driver` and returns the bytes the device wrote back.
func roundTrip<R: GuestMemory & ~Copyable, N: Notifier>(
    _ driver: inout DriverQueue<R, N>,
    _ messages: [[UInt8]],
    replyCapacity: Int
) throws -> [[UInt8]] {
    var replies: [[UInt8]] = []
    for message in messages {
        var chain = driver.makeChain()
        try driver.appendReadable(to: &chain, copying: message)
        try driver.appendWritable(to: &chain, capacity: replyCapacity)
        try driver.submit(chain)
        try driver.notifyIfNeeded()
        try driver.waitForUsed()
        guard let used = try driver.takeUsed() else {
            Issue.record("no used chain after waiting")
            return replies
        }
        var reply = [UInt8](repeating: 0, count: used.writtenByteCount)
        _ = try reply.withUnsafeMutableBytes { try driver.copyWrittenBytes(of: used, into: $0) }
        try driver.free(used)
        replies.append(reply)
    }
    return replies
}

/// Device processes: the component host, the seed across processes, bulk traffic, death.
extension SharedMemoryTests {
    @Suite("Device processes")
    struct ProcessTests {
        @Test func seedUseCaseAcrossProcesses() throws {
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 16 * 256, features: .all)
            let device = try SharedMemoryBackend.launch(
                SerialDevice.self,
                layout: layout,
                options: TestExecutables.options()
            )
            var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier, bufferSize: 256)

            var chain = driver.makeChain()  // 1. a new available entry
            for word in ["hello, ", "seL4 ", "world"] {  // 2. chained buffers
                try driver.appendReadable(to: &chain, copying: Array(word.utf8))
            }
            try driver.appendWritable(to: &chain, capacity: 64)
            #expect(chain.segmentCount == 4)
            #expect(chain.readableByteCount + chain.writableByteCount == 17 + 64)
            let id = try driver.submit(chain)
            try driver.notifyIfNeeded()  // 3. kick the device in the other process (4-7 happen there)
            try driver.waitForUsed()
            guard let used = try driver.takeUsed() else {  // 8. take the used entry
                Issue.record("the device returned nothing")
                return
            }
            #expect(used.id == id)
            #expect(used.status == .completed)
            var segments: [(Bool, String)] = []
            try driver.forEachSegment(of: used) { isWritable, bytes in
                segments.append((isWritable, String(decoding: bytes, as: UTF8.self)))
            }
            #expect(segments.map(\.1) == ["hello, ", "seL4 ", "world", "serial wrote 17 bytes: hello, seL4 world"])
            #expect(segments.map(\.0) == [false, false, false, true])
            try driver.free(used)  //    and free its buffers
            let (free, buffers) = (driver.freeBufferCount, driver.bufferCount)
            #expect(free == buffers)
            #expect(device.stop() == .finished)
            #expect(!isUnreapedChild(device.processID))
        }

        @Test func theSameDeviceRunsOnTheHeapAndInAChildProcess() throws {
            let layout = try RegionLayout(queueSizes: [16], dataAreaSize: 64 * 128, features: .all)
            let messages = (0..<20).map { index in
                Array("message \(index) ".utf8) + [UInt8](repeating: UInt8(index), count: index)
            }

            let thread = try HeapBackend.launch(EchoDevice.self, layout: layout)
            var heapDriver = try thread.makeDriverQueue(bufferSize: 128)
            let onHeap = try roundTrip(&heapDriver, messages, replyCapacity: 128)
            #expect(thread.stop() == .finished)

            let process = try SharedMemoryBackend.launch(
                EchoDevice.self,
                layout: layout,
                options: TestExecutables.options()
            )
            var processDriver = try process.makeDriverQueue(bufferSize: 128)
            let inProcess = try roundTrip(&processDriver, messages, replyCapacity: 128)
            #expect(process.stop() == .finished)

            #expect(onHeap == messages)
            #expect(inProcess == messages)
        }

        /// One million chains, each a 48-byte payload and an 8-byte reply, checksummed by the device
        /// in the child and checked by the driver; submitted in batches, one kick check per batch.
        @Test func aMillionChecksummedBuffersAcrossProcesses() throws {
            let total = 1_000_000
            let payloadSize = 48
            let layout = try RegionLayout(queueSizes: [256], dataAreaSize: 512 * 64, features: .all)
            let device = try SharedMemoryBackend.launch(
                ChecksumDevice.self,
                layout: layout,
                options: TestExecutables.options()
            )
            var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier, bufferSize: 64)
            var expected = [UInt64](repeating: 0, count: driver.queueSize)
            var submitted = 0
            var completed = 0
            var mismatches = 0
            var kicks = 0
            let clock = ContinuousClock()
            let start = clock.now
            while completed < total {
                while submitted < total && driver.freeDescriptorCount >= 2 {
                    var chain = driver.makeChain()
                    var hash: UInt64 = 0
                    let sequence = UInt64(submitted)
                    try driver.appendReadable(to: &chain, count: payloadSize) { bytes in
                        for word in 0..<payloadSize / 8 {
                            let value = (sequence &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(word) &* 0xBF58_476D_1CE4_E5B9)
                            bytes.storeBytes(of: value.littleEndian, toByteOffset: word * 8, as: UInt64.self)
                        }
                        var fnv = FNV1a()
                        fnv.combine(UnsafeRawBufferPointer(bytes))
                        hash = fnv.value
                    }
                    try driver.appendWritable(to: &chain, capacity: 8)
                    let id = try driver.submit(chain)
                    expected[Int(id)] = hash
                    submitted += 1
                }
                if try driver.notifyIfNeeded() { kicks += 1 }
                try driver.waitForUsed()
                while let used = try driver.takeUsed() {
                    var reply: UInt64 = 0
                    let copied = try withUnsafeMutableBytes(of: &reply) {
                        try driver.copyWrittenBytes(of: used, into: $0)
                    }
                    if copied != 8 || UInt64(littleEndian: reply) != expected[Int(used.id)] { mismatches += 1 }
                    try driver.free(used)
                    completed += 1
                }
            }
            let elapsed = clock.now - start
            print("1,000,000 buffers across processes in \(elapsed), \(kicks) kicks")
            let inFlight = driver.inFlightCount
            #expect(completed == total)
            #expect(mismatches == 0)
            #expect(inFlight == 0)
            #expect(device.stop() == .finished)
        }

        @Test func killingTheDeviceMidStreamReturnsEveryBuffer() throws {
            let layout = try RegionLayout(queueSizes: [128], dataAreaSize: 256 * 64, features: .all)
            let device = try SharedMemoryBackend.launch(
                ChecksumDevice.self,
                layout: layout,
                options: TestExecutables.options()
            )
            var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier, bufferSize: 64)
            var submitted = 0
            var completed = 0
            var killedAt: ContinuousClock.Instant?
            var failure: VirtqueueError?
            do {
                while true {
                    while driver.freeDescriptorCount >= 2 {
                        var chain = driver.makeChain()
                        try driver.appendReadable(to: &chain, copying: Array("chain \(submitted)".utf8))
                        try driver.appendWritable(to: &chain, capacity: 8)
                        try driver.submit(chain)
                        submitted += 1
                    }
                    try driver.notifyIfNeeded()
                    try driver.waitForUsed()
                    while let used = try driver.takeUsed() {
                        #expect(used.writtenByteCount == 8)
                        try driver.free(used)
                        completed += 1
                    }
                    if killedAt == nil && completed >= 20_000 {
                        try device.kill(signal: SIGKILL)
                        killedAt = ContinuousClock.now
                    }
                }
            } catch let error as VirtqueueError {
                failure = error
            }
            if let killedAt { print("the driver learned of the kill after \(ContinuousClock.now - killedAt)") }
            #expect(killedAt != nil)
            #expect(failure?.code == .peerDied || failure?.cause == .peerDied)
            let broken = driver.isBroken
            #expect(broken)
            var abandoned = 0
            while let chain = driver.takeAbandoned() {
                #expect(chain.status == .abandoned(.peerDied))
                try driver.free(chain)
                abandoned += 1
            }
            let (inFlight, free, buffers) = (driver.inFlightCount, driver.freeBufferCount, driver.bufferCount)
            #expect(completed + abandoned == submitted)
            #expect(inFlight == 0)
            #expect(free == buffers)
            #expect(device.stop() == .signaled(SIGKILL))
            #expect(!isUnreapedChild(device.processID))
        }

        @Test func aChildRefusesARegionWithABadHeaderAndTheLaunchSaysWhy() throws {
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
            let file = try SharedMemoryFile.create(layout: layout)
            try file.map().withUnsafeMutableBytes {
                $0.storeBytes(of: UInt16(7).littleEndian, toByteOffset: 8, as: UInt16.self)
            }
            let failure = try #require(throws: DeviceFailure.self) {
                _ = try SharedMemoryBackend.launch(EchoDevice.self, file: file, options: TestExecutables.options())
            }
            #expect(failure.deviceName == EchoDevice.name)
            guard case .failedToStart(let reason) = failure.termination else {
                Issue.record("\(failure)")
                return
            }
            #expect(reason.contains("version 7"), "\(failure)")
            let pid = try #require(failure.location.processID)
            #expect(!isUnreapedChild(pid))
        }

        @Test func aHostileDeviceCannotTruncateTheRegion() throws {
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
            let device = try SharedMemoryBackend.launch(
                TruncatingDevice.self,
                layout: layout,
                options: TestExecutables.options()
            )
            var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier, bufferSize: 64)
            let replies = try roundTrip(&driver, [[1]], replyCapacity: 8)
            let errnos = replies.first.map { reply in
                reply.withUnsafeBytes { raw in
                    (0..<raw.count / 4).map {
                        Int32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self))
                    }
                }
            }
            #expect(errnos == [EPERM, EPERM])
            // Every byte of our mapping is still there: touching the last page does not raise SIGBUS.
            let region = try device.makeRegion()
            region.withUnsafeMutableBytes { raw in
                raw[raw.count - 1] = 0x5A
                #expect(raw[raw.count - 1] == 0x5A)
            }
            #expect(device.file.byteCount == layout.regionSize)
            #expect(device.stop() == .finished)
        }

        @Test func aDeviceThatThrowsCompletesItsRequestAndExits70() throws {
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
            let device = try SharedMemoryBackend.launch(
                FailingDevice.self,
                layout: layout,
                options: TestExecutables.options()
            )
            var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier, bufferSize: 64)
            #expect(try roundTrip(&driver, [[1, 2, 3]], replyCapacity: 8) == [[]])
            #expect(try device.waitForExit() == .exited(DeviceHost.ExitCode.deviceFailed))
            // The error the device threw, as it described it, named with the device.
            let failure = try #require(device.failure())
            #expect(failure.termination == .threw("Failure()"), "\(failure)")
            #expect(failure.description == "device failing (pid \(device.processID)) threw: Failure()")
        }

        @Test(arguments: [false, true])
        func bothHostOverloadsServe(existential: Bool) throws {
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
            let device = try SharedMemoryBackend.launch(
                EchoDevice.self,
                layout: layout,
                options: TestExecutables.options { $0.arguments = existential ? ["--existential"] : [] }
            )
            var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier, bufferSize: 64)
            #expect(try roundTrip(&driver, [[1, 2, 3], [4]], replyCapacity: 8) == [[1, 2, 3], [4]])
            #expect(device.stop() == .finished)
        }

        @Test func entriesAreNamedAfterTheirDevices() {
            let existential: any DeviceComponent.Type = SerialDevice.self
            #expect(DeviceHost.Entry(EchoDevice.self).name == EchoDevice.name)
            #expect(DeviceHost.Entry(existential).name == "serial")
        }

        @Test func anUnknownDeviceNameFailsTheLaunch() throws {
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
            let failure = try #require(throws: DeviceFailure.self) {
                _ = try SharedMemoryBackend.launch(
                    UnhostedDevice.self,
                    layout: layout,
                    options: TestExecutables.options()
                )
            }
            guard case .failedToStart(let reason) = failure.termination else {
                Issue.record("\(failure)")
                return
            }
            #expect(
                reason.hasPrefix("no device named \"unhosted\" (this executable hosts: serial, echo,"),
                "\(failure)"
            )
        }

        @Test func aHostThatNeverReportsTimesOutAndIsKilled() throws {
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
            let start = ContinuousClock.now
            let error = try #require(throws: SharedMemoryError.self) {
                _ = try SharedMemoryBackend.launch(
                    EchoDevice.self,
                    layout: layout,
                    options: TestExecutables.options {
                        $0.arguments = ["--test-confinement", "hang"]
                        $0.startupTimeout = .milliseconds(500)
                    }
                )
            }
            #expect(error.code == .timedOut, "\(error)")
            #expect(error.message.contains("did not report that it started"), "\(error)")
            #expect(ContinuousClock.now - start < .seconds(5))
        }

        @Test func aMissingExecutableIsASpawnError() throws {
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
            let before = backendDescriptorCount()
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryBackend.launch(
                    EchoDevice.self,
                    layout: layout,
                    options: TestExecutables.options { $0.executable = "/nonexistent/VirtqueueDeviceHost" }
                )
            }
            #expect(error?.code == .spawnFailed)
            #expect(error?.underlyingError == .noSuchFileOrDirectory)
            #expect(backendDescriptorCount() == before)
        }

        @Test func theChildInheritsExactlyItsFourDescriptors() throws {
            // A descriptor without close-on-exec, which a plain fork and exec would leak.
            let leaky = open("/dev/null", O_RDONLY)
            try #require(leaky >= 0)
            defer { close(leaky) }
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
            let device = try SharedMemoryBackend.launch(
                DescriptorListingDevice.self,
                layout: layout,
                options: TestExecutables.options()
            )
            var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier, bufferSize: 64)
            let reply = try roundTrip(&driver, [[0]], replyCapacity: 64)
            #expect(reply.map { String(decoding: $0, as: UTF8.self) } == ["0,1,2,3,4,5,6"])
            #expect(device.stop() == .finished)
        }

        /// The example executable re-enters itself (its own /proc/self/exe) in the device role.
        @Test func theComponentHostExampleRunsItselfAsTheDevice() throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: TestExecutables.directory + "/ComponentHost")
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            let lines = text.split(separator: "\n")
            #expect(lines.contains { $0.hasPrefix("heap:") && $0.hasSuffix("wrote 17 bytes: hello, seL4 world") })
            #expect(
                lines.contains { $0.hasPrefix("shared memory:") && $0.hasSuffix("wrote 17 bytes: hello, seL4 world") }
            )
            #expect(
                lines.contains { $0.hasPrefix("device process") && $0.hasSuffix("served until its driver hung up") }
            )
        }

        @Test func theDeviceGetsItsConfigurationOnBothBackends() throws {
            var template = Array("/tmp/vq-image-XXXXXX".utf8CString)
            let image = mkstemp(&template)
            try #require(image >= 0)
            unlink(template)
            defer { close(image) }
            #expect(write(image, "disk image", 10) == 10)
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)

            let thread = try HeapBackend.launch(
                ConfiguredDevice.self,
                layout: layout,
                configuration: DeviceConfiguration(arguments: ["alpha", "--beta"], fileDescriptors: [image])
            )
            var heapDriver = try thread.makeDriverQueue(bufferSize: 128)
            let onHeap = try roundTrip(&heapDriver, [[0]], replyCapacity: 128).map {
                String(decoding: $0, as: UTF8.self)
            }
            #expect(thread.stop() == .finished)
            #expect(onHeap == ["alpha|--beta|fd \(image): disk image"])

            let device = try SharedMemoryBackend.launch(
                ConfiguredDevice.self,
                layout: layout,
                options: TestExecutables.options {
                    $0.configuration = DeviceConfiguration(arguments: ["alpha", "--beta"], fileDescriptors: [image])
                }
            )
            var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier, bufferSize: 128)
            let inChild = try roundTrip(&driver, [[0]], replyCapacity: 128).map { String(decoding: $0, as: UTF8.self) }
            #expect(inChild == ["alpha|--beta|fd 7: disk image"])
            #expect(device.stop() == .finished)
        }

        @Test func launchingAndStoppingLeaksNoDescriptorAndNoZombie() throws {
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 4096, features: .all)
            func cycle(stop: Bool) throws -> Int32 {
                let device = try SharedMemoryBackend.launch(
                    EchoDevice.self,
                    layout: layout,
                    options: TestExecutables.options()
                )
                var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier, bufferSize: 64)
                #expect(try roundTrip(&driver, [[9, 8, 7]], replyCapacity: 8) == [[9, 8, 7]])
                if stop { #expect(device.stop() == .finished) }
                return device.processID  // without stop, the handle's deinit hangs up and reaps
            }
            _ = try cycle(stop: true)  // warm up anything the process creates lazily
            let before = openDescriptors()
            var children: [Int32] = []
            for index in 0..<4 { children.append(try cycle(stop: index % 2 == 0)) }
            let after = openDescriptors()
            #expect(backendCount(after) == backendCount(before))
            #expect(Set(after.keys).subtracting(before.keys).map { "\($0) → \(after[$0] ?? "")" } == [])
            for pid in children { #expect(!isUnreapedChild(pid), "child \(pid) was not reaped") }
        }
    }
}

func backendCount(_ descriptors: [CInt: String]) -> Int {
    descriptors.values.filter { target in
        target.hasPrefix("/memfd:") || target.hasPrefix("anon_inode:[eventfd]")
            || target.hasPrefix("anon_inode:[pidfd]")
            || target.hasPrefix("socket:") || target.hasPrefix("pipe:")
    }.count
}
