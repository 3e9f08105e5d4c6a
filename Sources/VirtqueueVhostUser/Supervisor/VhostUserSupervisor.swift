import CVirtqueueSystem
import Glibc
import Synchronization
public import SystemPackage
public import VirtqueueSandbox
public import VirtqueueSharedMemory

/// A supervised vhost-user back-end: an unconfined supervisor that owns the listening socket and
/// the device's resources (a disk image's descriptor, say), and a worker process per connection
/// that maps the guest's memory and serves its rings — under a seccomp filter when sandboxed.
///
/// For each connection the supervisor starts the worker (the same executable, in the
/// ``VhostUserWorker`` role) with the connection and the device's descriptors and nothing else;
/// when sandboxed it waits for the worker's confinement report and checks it (the policy's
/// digest, and the kernel's `Seccomp: 2` for the worker) before the worker reads its first
/// message — a worker that does not prove it is confined is killed and the connection closed.
/// Then it waits for the worker to end, logs how (a clean hang-up, a crash, a forbidden system
/// call by name), and accepts the next connection: a front-end that reconnects (QEMU with
/// `reconnect=1`) gets a new worker, which resumes the requests the dead one had in flight from
/// the inflight area (`docs/vhost-user.md`).
///
/// The split is described in `docs/sandbox.md`.
public final class VhostUserSupervisor: Sendable {
    /// How a worker is isolated.
    public enum Isolation: Hashable, Sendable, CustomStringConvertible {
        /// A process of its own, unconfined.
        case process
        /// A process of its own under `policy` (see ``SandboxPolicy/vhostUserWorker``), verified
        /// before it serves.
        case sandboxed(SandboxPolicy)

        public var description: String {
            switch self {
            case .process: "process"
            case .sandboxed: "sandboxed"
            }
        }
    }

    /// What happened to one connection.
    public struct ConnectionOutcome: Hashable, Sendable, CustomStringConvertible {
        /// The worker's process id.
        public var processID: Int32
        /// How the worker ended.
        public var status: ExitStatus
        /// The forbidden system call that killed it, if its filter did.
        public var violation: SandboxViolation?
        /// Why it was killed before it served, if its confinement could not be verified.
        public var confinementFailure: SandboxError?

        /// Whether the worker ended as a worker should (the front-end hung up).
        public var isClean: Bool { status == .exited(VhostUserWorker.ExitCode.done) }

        public var description: String {
            if let confinementFailure { return "worker \(processID) not confined: \(confinementFailure.message)" }
            if let violation { return "worker \(processID) \(status): \(violation)" }
            return "worker \(processID) \(status)"
        }
    }

    /// The executable started as a worker.
    public let executable: FilePath
    /// The worker's isolation.
    public let isolation: Isolation
    /// Descriptors handed to every worker (the device's: `DeviceConfiguration.fileDescriptors`).
    public let deviceDescriptors: [FileDescriptor]
    /// Arguments handed to the device (`DeviceConfiguration.arguments`); the supervisor adds
    /// `connection=N`, the connection's ordinal (1 for the first).
    public let deviceArguments: [String]
    /// How long a sandboxed worker has to report its confinement.
    public let startupTimeout: Duration
    let log: VhostUserLogSink
    private let outcomes = Mutex<[ConnectionOutcome]>([])
    private let running = Mutex<Int32?>(nil)

    /// A supervisor.
    ///
    /// - Parameters:
    ///   - executable: The executable to start as a worker; it must call
    ///     ``VhostUserWorker/runIfWorkerRole(_:arguments:options:log:)`` first thing in `main`.
    ///     The default is this process's own executable.
    ///   - isolation: How the worker is isolated.
    ///   - deviceDescriptors: Descriptors the device needs (the supervisor keeps them open).
    ///   - deviceArguments: The device's arguments.
    ///   - startupTimeout: How long a sandboxed worker has to report its confinement.
    ///   - log: Where the supervisor's records go.
    public init(
        executable: FilePath = FilePath("/proc/self/exe"),
        isolation: Isolation,
        deviceDescriptors: [FileDescriptor] = [],
        deviceArguments: [String] = [],
        startupTimeout: Duration = .seconds(10),
        log: @escaping VhostUserLogSink
    ) {
        self.executable = executable
        self.isolation = isolation
        self.deviceDescriptors = deviceDescriptors
        self.deviceArguments = deviceArguments
        self.startupTimeout = startupTimeout
        self.log = log
    }

    /// What happened to each connection so far, oldest first.
    public var connections: [ConnectionOutcome] { outcomes.withLock { $0 } }

    /// The process id of the worker serving now, if one is.
    public var workerProcessID: Int32? { running.withLock { $0 } }

    /// Accepts connections on `listener` one at a time, each served by a new worker, until
    /// `shouldStop` says so (asked at least every 200 ms between connections).
    ///
    /// - Throws: ``VhostUserError`` if accepting or starting a worker fails.
    public func run(on listener: VhostUserListener, until shouldStop: @escaping @Sendable () -> Bool)
        throws(VhostUserError)
    {
        let executable = resolvedExecutable()
        while !shouldStop() {
            guard let connection = try listener.accept(timeout: .milliseconds(200)) else { continue }
            let outcome = try serve(connection, executable: executable, until: shouldStop)
            outcomes.withLock { $0.append(outcome) }
            let level: VhostUserLogRecord.Level = outcome.isClean ? .info : .error
            log(VhostUserLogRecord(level: level, "connection ended: \(outcome)"))
        }
    }

    /// Serves one connection with a new worker and waits for the worker to end (killing it if
    /// `shouldStop` turns true meanwhile).
    func serve(
        _ connection: VhostUserSocket,
        executable: String,
        until shouldStop: () -> Bool
    ) throws(VhostUserError) -> ConnectionOutcome {
        var pair: [CInt] = [-1, -1]
        guard vq_socketpair(&pair) == 0 else { throw .system("socketpair", Errno(rawValue: errno)) }
        defer {
            _ = Glibc.close(pair[0])
            _ = Glibc.close(pair[1])
        }
        let policyArgument: String
        switch isolation {
        case .process: policyArgument = "-"
        case .sandboxed(let policy): policyArgument = policy.argumentEncoding
        }
        let ordinal = outcomes.withLock { $0.count } + 1
        let arguments =
            [executable, VhostUserWorker.argument, String(deviceDescriptors.count), policyArgument] + deviceArguments
            + ["connection=\(ordinal)"]
        let inherited = [connection.fileDescriptor.rawValue, pair[1]] + deviceDescriptors.map(\.rawValue)
        var pid: pid_t = 0
        let spawned = withCStrings(arguments) { argv in
            inherited.withUnsafeBufferPointer { fds in
                vq_spawn(&pid, executable, argv, environ, fds.baseAddress, CInt(fds.count))
            }
        }
        guard spawned == 0 else {
            throw .system("starting the worker \(executable)", Errno(rawValue: spawned))
        }
        // The worker holds the connection now; ours closes when `connection` goes.
        _ = Glibc.close(pair[1])
        pair[1] = -1
        running.withLock { $0 = pid }
        defer { running.withLock { $0 = nil } }
        log(VhostUserLogRecord(level: .info, "worker \(pid) started (\(isolation))"))

        var confinementFailure: SandboxError?
        if case .sandboxed(let policy) = isolation {
            let report = receive(pair[0], timeout: startupTimeout)
            if let (failure, account) = report.map({ policy.confinementProblem(report: $0, processID: pid) })
                ?? (SandboxError.ConfinementFailure.noReport, "it sent no confinement report within \(startupTimeout)")
            {
                _ = Glibc.kill(pid, SIGKILL)
                confinementFailure = SandboxError(
                    .notConfined,
                    "worker \(pid) is not confined: \(account)",
                    confinementFailure: failure,
                    processID: pid
                )
            } else {
                log(VhostUserLogRecord(level: .info, "worker \(pid) is confined (seccomp filter, policy verified)"))
            }
        }
        let status = waitForExit(pid, until: shouldStop)
        // The SIGSYS reporter leaves a record before the worker exits (with 128 + SIGSYS).
        let violation = receive(pair[0], timeout: .zero).flatMap { SandboxViolation(report: $0) }
        return ConnectionOutcome(
            processID: pid,
            status: status,
            violation: violation,
            confinementFailure: confinementFailure
        )
    }

    func resolvedExecutable() -> String {
        guard executable.string == "/proc/self/exe" else { return executable.string }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return executable.string }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// One message from the worker's report socket, waiting up to `timeout`; `nil` if none came
    /// or the worker closed it.
    func receive(_ socket: CInt, timeout: Duration) -> [UInt8]? {
        guard (try? waitReady(socket, events: CInt(POLLIN), until: Deadline(timeout))) == true else { return nil }
        var bytes = [UInt8](repeating: 0, count: 256)
        let count = bytes.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, CInt(MSG_DONTWAIT)) }
        return count > 0 ? Array(bytes[0..<count]) : nil
    }

    /// Waits for `pid` to end and reaps it; kills it if `shouldStop` turns true meanwhile
    /// (asked every 50 ms).
    func waitForExit(_ pid: pid_t, until shouldStop: () -> Bool) -> ExitStatus {
        var status: CInt = 0
        var killed = false
        while true {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { break }
            if result < 0 {
                if errno == EINTR { continue }
                return .exited(-1)
            }
            if !killed && shouldStop() {
                _ = Glibc.kill(pid, SIGKILL)
                killed = true
            }
            usleep(50_000)
        }
        return vq_wifsignaled(status) != 0 ? .signaled(vq_wtermsig(status)) : .exited(vq_wexitstatus(status))
    }
}

/// Calls `body` with `strings` as a NULL-terminated C array.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for pointer in pointers { free(pointer) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

extension SandboxPolicy {
    /// The calls a vhost-user back-end's worker makes serving a connection, measured with the
    /// SIGSYS reporter against QEMU and our own front-end (`docs/sandbox.md`), plus
    /// `deviceCalls` (a block device's `preadv`, `pwritev`, `fdatasync`).
    ///
    /// No `open`, no `socket`, no `connect`, no `exec`, no new process (`clone` only with
    /// `CLONE_THREAD`; `clone3` fails with `ENOSYS` so the C library falls back to `clone`), no
    /// mapping with `PROT_EXEC`. The message calls (`recvmsg`, `sendmsg`) are allowed on the
    /// connection only. `read`, `write` and `poll` are allowed on any descriptor, since the
    /// eventfds arrive over the connection after the filter is loaded.
    public static func vhostUserWorker(deviceCalls: [String] = []) -> SandboxPolicy {
        SandboxPolicy(
            rules: [
                Rule("recvmsg", .onFileDescriptors([.liveness])),
                Rule("sendmsg", .onFileDescriptors([.liveness])),
                Rule("poll"), Rule("ppoll"), Rule("read"), Rule("write"), Rule("preadv2"), Rule("pwritev2"),
                Rule("mmap", .withoutExecute(argument: 2)), Rule("mprotect", .withoutExecute(argument: 2)),
                Rule("munmap"), Rule("madvise"), Rule("brk"), Rule("mremap"),
                Rule("fstat"), Rule("newfstatat"), Rule("fcntl"),
                Rule("memfd_create"), Rule("ftruncate"), Rule("eventfd2"),
                Rule("clone", .withFlags(argument: 0, mask: 0x0001_0000)),  // CLONE_THREAD,
                Rule("clone3", .failsWith(errno: ENOSYS)),
                Rule("futex"), Rule("set_robust_list"), Rule("rseq"), Rule("rt_sigprocmask"),
                Rule("sched_yield"), Rule("nanosleep"), Rule("clock_nanosleep"), Rule("getrandom"),
                Rule("gettid"), Rule("getpid"), Rule("rt_sigaction"), Rule("close"), Rule("exit"), Rule("exit_group"),
            ] + deviceCalls.map { Rule($0) }
        )
    }
}
