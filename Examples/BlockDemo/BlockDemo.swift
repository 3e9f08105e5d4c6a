// The sandboxed component demo: a virtio-blk device serving a disk image, run as a
// seccomp-confined child process (or, with --isolation, on a thread or in a plain child).
import ArgumentParser
import Glibc
import Logging
import SystemPackage
import VirtioBlock
import Virtqueue
import VirtqueueHeap
import VirtqueueSandbox
import VirtqueueSharedMemory

enum Isolation: String, CaseIterable, ExpressibleByArgument {
    case heap, shm, sandbox

    var summary: String {
        switch self {
        case .heap: "heap: the device on a thread of this process"
        case .shm: "shared memory: the device in a child process (memfd + notification sockets)"
        case .sandbox: "sandbox: the device in a seccomp-confined child process"
        }
    }
}

struct BlockDemo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "BlockDemo",
        abstract: "Write a disk image through a virtio-blk device behind a virtqueue, read it back and verify it.",
        discussion: """
            The device serves a disk image this process opened; it gets the image's file \
            descriptor and nothing else. By default it runs sandboxed: a child process whose \
            seccomp filter allows only its ring's notification sockets, the allocator, and preadv/pwritev/fdatasync \
            on the image. --misbehave makes it attempt open("/etc/hostname") halfway through.
            """
    )

    @Option(help: "Where the device runs: heap, shm or sandbox.")
    var isolation: Isolation = .sandbox

    @Flag(help: "Make the device attempt a forbidden system call halfway through the writes.")
    var misbehave = false

    @Flag(help: "Run the packed virtqueue (VIRTIO_F_RING_PACKED) instead of the split one: the same code.")
    var packed = false

    @Option(help: "The disk image's size in MiB.")
    var megabytes = 256

    @Option(help: "Bytes per request, in KiB (a multiple of 4).")
    var requestKiB = 64

    @Option(help: "Requests in flight at most.")
    var depth = 64

    mutating func validate() throws {
        guard megabytes > 0, megabytes <= 4096 else { throw ValidationError("--megabytes must be 1…4096") }
        guard requestKiB > 0, requestKiB % 4 == 0, requestKiB <= 1024 else {
            throw ValidationError("--request-ki-b must be a multiple of 4 up to 1024")
        }
        guard depth > 0, depth <= 256 else { throw ValidationError("--depth must be 1…256") }
    }

    func run() throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: "BlockDemo")
        logger.logLevel = .info

        let disk = try DiskImage(megabytes: megabytes)
        defer { disk.remove() }
        let requestBytes = requestKiB * 1024
        let layout = try RegionLayout(
            queueSizes: [256],
            dataAreaSize: depth * 3 * requestBytes,
            features: packed ? Features.all.union(.ringPacked) : .all
        )
        var arguments = ["sectors=\(disk.sectorCount)"]
        let halfway = Int(disk.sectorCount) / (requestBytes / 512) / 2
        if misbehave { arguments.append("misbehave-after=\(max(halfway, 1))") }
        let configuration = DeviceConfiguration(arguments: arguments, fileDescriptors: [disk.descriptor])
        let cleanConfiguration = DeviceConfiguration(
            arguments: ["sectors=\(disk.sectorCount)"],
            fileDescriptors: [disk.descriptor]
        )

        say("BlockDemo: \(megabytes) MiB disk image at \(disk.path), \(requestKiB) KiB requests, depth \(depth)")
        say("isolation: \(isolation.summary)")
        say("ring: \(packed ? "packed" : "split") virtqueue of \(layout.queues[0].size)")
        var workload = Workload(sectorCount: disk.sectorCount, requestBytes: requestBytes)
        var progress = Progress(isolation: isolation, total: disk.byteCount)
        var restarts: [String] = []
        let clock = ContinuousClock()
        let start = clock.now

        /// Drives the workload on devices `launch` starts — the same code at every isolation
        /// level. A device that dies is explained (which device, and why), the requests it held
        /// come back, and a new device takes over, up to three times.
        func drive<Device: DeviceHandle>(_ launch: (DeviceConfiguration) throws -> Device) throws {
            var device = try launch(configuration)
            logger.info("started device \(device.deviceName) \(device.location)")
            while true {
                var client = BlockClient(queue: try device.makeDriverQueue(bufferSize: requestBytes))
                guard case .deviceDied(let error) = try workload.run(&client, progress: { progress.update($0) }) else {
                    break
                }
                progress.interrupt()
                let cause = device.explain(error)
                logger.error("device died: \(cause)")
                guard let failure = cause as? DeviceFailure, restarts.count < 3 else { throw cause }
                logger.notice(
                    "\(workload.reissue.count) requests in flight were returned to the driver; re-issuing them on a new device"
                )
                device.stop()
                device = try launch(cleanConfiguration)
                if case .forbiddenSystemCall(let name, _) = failure.termination {
                    restarts.append("forbidden system call \(name)")
                } else {
                    restarts.append("\(failure.termination)")
                }
                logger.info("relaunched \(device.deviceName) \(device.location), restart \(restarts.count) of 3")
            }
            device.stop()
            if let failure = device.failure() { throw failure }
        }

        // The one place the isolation level matters: which launcher starts the device.
        func options(_ configuration: DeviceConfiguration) -> LaunchOptions {
            var options = LaunchOptions()
            options.configuration = configuration
            return options
        }
        switch isolation {
        case .heap:
            try drive { try HeapBackend.launch(BlockDevice.self, layout: layout, configuration: $0) }
        case .shm:
            try drive { try SharedMemoryBackend.launch(BlockDevice.self, layout: layout, options: options($0)) }
        case .sandbox:
            let policy = SandboxPolicy.deviceLoop.allowing(
                .init("preadv", .onFileDescriptors([.device(0)])),
                .init("pwritev", .onFileDescriptors([.device(0)])),
                .init("fdatasync", .onFileDescriptors([.device(0)]))
            )
            logger.info("sandbox policy: \(policy.rules.count) rules")
            try drive {
                try SandboxBackend.launch(BlockDevice.self, layout: layout, policy: policy, options: options($0))
            }
        }
        progress.finish(workload)
        let elapsed = clock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18

        let mib = 1024.0 * 1024.0
        say("")
        say("Summary")
        say("  isolation          \(isolation.summary)")
        say(
            "  moved              \(format(Double(workload.bytesMoved) / mib)) MiB (\(format(Double(workload.bytesWritten) / mib)) MiB written, \(format(Double(workload.bytesRead) / mib)) MiB read back)"
        )
        say("  requests           \(workload.requests) (\(requestKiB) KiB each, plus a flush)")
        say("  time               \(format(seconds, digits: 3)) s")
        say("  throughput         \(format(Double(workload.bytesMoved) / mib / seconds)) MiB/s")
        say(
            "  kicks per buffer   \(format(Double(workload.kicks) / Double(max(workload.requests, 1)), digits: 4)) (\(workload.kicks) kicks for \(workload.requests) requests)"
        )
        say("  device restarts    \(restarts.isEmpty ? "none" : restarts.joined(separator: "; "))")
        if workload.reissued > 0 {
            print("  re-issued          \(workload.reissued) requests lost with the dead device")
        }
        if misbehave && isolation != .sandbox {
            say(
                "  misbehaviour       the device opened /etc/hostname mid-run and nothing stopped it: only the sandbox does"
            )
        }
        let verified = workload.failures == 0 && workload.mismatches == 0 && workload.bytesRead == disk.byteCount
        say(
            "  verification       \(verified ? "OK: every sector read back as written" : "FAILED: \(workload.failures) errors, \(workload.mismatches) mismatches")"
        )
        if !verified { throw ExitCode.failure }
    }
}

/// The progress line, redrawn in place on standard error.
struct Progress {
    let isolation: Isolation
    let total: Int
    var lastDraw = ContinuousClock.now
    let start = ContinuousClock.now

    mutating func update(_ workload: Workload) {
        let now = ContinuousClock.now
        guard now - lastDraw > .milliseconds(100) else { return }
        lastDraw = now
        draw(workload)
    }

    func draw(_ workload: Workload) {
        let done = workload.phase == .reading ? workload.bytesRead : workload.bytesWritten
        let elapsed =
            Double((ContinuousClock.now - start).components.attoseconds) / 1e18
            + Double((ContinuousClock.now - start).components.seconds)
        let rate = Double(workload.bytesMoved) / 1_048_576 / max(elapsed, 0.001)
        let line =
            "\r[\(isolation.rawValue)] \(workload.phase.rawValue) \(format(Double(done) / 1_048_576))/\(format(Double(total) / 1_048_576)) MiB  \(format(rate)) MiB/s  \(workload.kicks) kicks   "
        writeToStandardError(line)
    }

    func interrupt() { writeToStandardError("\n") }

    func finish(_ workload: Workload) {
        draw(workload)
        writeToStandardError("\n")
    }
}

/// A disk image in a temporary file, open for reading and writing.
struct DiskImage {
    let path: String
    let descriptor: CInt
    let byteCount: Int
    var sectorCount: UInt64 { UInt64(byteCount / BlockRequest.sectorSize) }

    init(megabytes: Int) throws {
        var template = Array("/tmp/blockdemo-XXXXXX.img".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { buffer -> CInt in
            guard let start = buffer.baseAddress else { return -1 }
            return mkstemps(start, 4)
        }
        guard descriptor >= 0, fcntl(descriptor, F_SETFD, FD_CLOEXEC) == 0 else { throw Errno(rawValue: errno) }
        path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        byteCount = megabytes * 1024 * 1024
        guard ftruncate(descriptor, off_t(byteCount)) == 0 else { throw Errno(rawValue: errno) }
        self.descriptor = descriptor
    }

    func remove() {
        close(descriptor)
        unlink(path)
    }
}

/// Prints a line straight to standard output (unbuffered, so it interleaves with the log).
func say(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { bytes in _ = write(1, bytes.baseAddress, bytes.count) }
}

func writeToStandardError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}

func format(_ value: Double, digits: Int = 1) -> String {
    guard value.isFinite else { return "-" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    return "\(rounded)"
}

@main
enum Main {
    static func main() {
        // Started by SharedMemoryBackend or SandboxBackend in the device role: serve and exit.
        DeviceHost.runIfDeviceRole(devices: [DeviceHost.Entry(BlockDevice.self)], confinement: SandboxConfinement())
        BlockDemo.main()
    }
}
