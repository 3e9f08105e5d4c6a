import ArgumentParser
import Glibc
import Logging
import Synchronization
import SystemPackage
import VirtioBlock
import Virtqueue
import VirtqueueSandbox
import VirtqueueVhostUser

/// A vhost-user-blk back-end serving a disk image: QEMU (`-device vhost-user-blk-pci`) or any
/// vhost-user front-end connects to `--socket`; each connection is served by a worker process —
/// seccomp-confined with `--isolation sandbox` — that a supervisor restarts when the front-end
/// reconnects after the worker died, resuming the requests it had in flight.
struct VhostUserBlock: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A vhost-user-blk back-end serving a disk image (see docs/vhost-user.md)."
    )

    @Option(help: "The vhost-user socket to listen on (QEMU: -chardev socket,path=…).")
    var socket: String

    @Option(help: "The disk image (a regular file, a whole number of 512-byte sectors).")
    var image: String

    @Option(
        help: "How the worker that maps guest memory runs: shm (a process of its own) or sandbox (seccomp-confined)."
    )
    var isolation: String = "sandbox"

    @Option(help: "Stop after this many connections (default: serve until SIGINT or SIGTERM).")
    var connections: Int?

    @Option(help: "A test aid: the first worker hangs in its N-th write request (kill it to test resuming).")
    var stallAfterWrites: Int?

    @Option(help: "A test aid: the first worker attempts a forbidden system call (open) in its N-th request.")
    var misbehaveAfter: Int?

    @Flag(help: "Log every vhost-user message.")
    var verbose = false

    func run() throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: "VhostUserBlock")
        logger.logLevel = verbose ? .debug : .info

        let disk = open(image, O_RDWR | O_CLOEXEC)
        guard disk >= 0 else { throw ValidationError("cannot open \(image): \(String(cString: strerror(errno)))") }
        defer { close(disk) }
        var status = stat()
        guard fstat(disk, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            throw ValidationError("\(image) is not a regular file")
        }
        guard status.st_size > 0, status.st_size % Int(BlockRequest.sectorSize) == 0 else {
            throw ValidationError("\(image): \(status.st_size) bytes is not a whole number of 512-byte sectors")
        }
        let sectors = UInt64(status.st_size) / UInt64(BlockRequest.sectorSize)

        let mode: VhostUserSupervisor.Isolation
        switch isolation {
        case "shm", "process": mode = .process
        case "sandbox":
            mode = .sandboxed(.vhostUserWorker(deviceCalls: BlockDevice.systemCalls + ["fsync"]))
        default: throw ValidationError("--isolation must be shm or sandbox, not \(isolation)")
        }
        let supervisorLogger = logger
        let supervisor = VhostUserSupervisor(
            isolation: mode,
            deviceDescriptors: [FileDescriptor(rawValue: disk)],
            deviceArguments: ["sectors=\(sectors)"] + (stallAfterWrites.map { ["stall-after-writes=\($0)"] } ?? [])
                + (misbehaveAfter.map { ["misbehave-after=\($0)"] } ?? []),
            log: { record in supervisorLogger.log(record) }
        )
        let listener = try VhostUserListener(path: FilePath(socket))
        logger.info(
            "serving \(image) (\(sectors) sectors) on \(socket), worker isolation \(mode); QEMU: -chardev socket,id=vub,path=\(socket),reconnect=1 -device vhost-user-blk-pci,chardev=vub"
        )
        installStopHandlers()
        let limit = connections
        try supervisor.run(on: listener) {
            stopRequested.load(ordering: .relaxed) || limit.map { supervisor.connections.count >= $0 } == true
        }
        let served = supervisor.connections
        let crashed = served.filter { !$0.isClean }
        logger.info(
            "summary: \(served.count) connections, \(served.count - crashed.count) ended cleanly, \(crashed.count) workers died or were refused"
        )
        for outcome in crashed { logger.info("  \(outcome)") }
    }
}

/// Set by SIGINT / SIGTERM: the supervisor stops between connections (and stops the worker).
let stopRequested = Atomic<Bool>(false)

func installStopHandlers() {
    for signalNumber in [SIGINT, SIGTERM] {
        signal(signalNumber) { _ in stopRequested.store(true, ordering: .relaxed) }
    }
}

extension Logger {
    /// Logs a back-end record at its level, with its error and queue.
    func log(_ record: VhostUserLogRecord) {
        let level: Logger.Level =
            switch record.level {
            case .debug: .debug
            case .info: .info
            case .notice: .notice
            case .warning: .warning
            case .error: .error
            }
        log(level: level, "\(record)")
    }
}

/// The worker's log: one line per record on standard error, written with a single `write` (no
/// clock, no locale: nothing the worker's filter forbids).
@Sendable func workerLog(_ record: VhostUserLogRecord) {
    guard record.level >= .info else { return }
    var line = "worker \(getpid()): \(record)\n"
    line.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}

// Started by the supervisor in the worker role: serve the one connection and exit.
VhostUserWorker.runIfWorkerRole(VhostUserBlockDevice.self, log: workerLog)
VhostUserBlock.main()
