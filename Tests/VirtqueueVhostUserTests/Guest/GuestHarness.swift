// A harness that boots a real Linux guest under QEMU (TCG) against any vhost-user-blk back-end.
//
// The guest is the Debian kernel with a busybox initramfs built at test time by
// scripts/guest/build-initramfs.sh; its /init (scripts/guest/init.sh) runs the workload named on
// the kernel command line and prints `VQTEST key=value` lines on the serial console, which
// `GuestRun` parses. See ControlGuestTests.swift for a complete use with qemu-storage-daemon.

import Foundation
import Glibc
import Synchronization
import Testing

// MARK: - Peers

/// The programs the guest tests need from the host: QEMU, qemu-storage-daemon (the control
/// back-end), a kernel with its modules, a static busybox and cpio.
struct GuestPeers: Sendable {
    var qemu: String
    var storageDaemon: String
    var kernel: String
    var busybox: String
    var cpio: String

    /// The Debian packages that provide every peer.
    static let debianPackages = "qemu-system-x86 qemu-utils linux-image-amd64 busybox-static cpio"

    /// True when `VIRTQUEUE_REQUIRE_PEERS=1` (CI): a missing peer fails the test instead of
    /// skipping it.
    static var required: Bool { ProcessInfo.processInfo.environment["VIRTQUEUE_REQUIRE_PEERS"] == "1" }

    /// The peers found on this machine, or a message naming what is missing and how to install
    /// it. Looked up once per process.
    static let availability: Result<GuestPeers, GuestHarnessError> = find()

    /// Whether guest tests should run: the peers are present, or they are required (then the
    /// test runs and `require()` fails it with the message).
    static var shouldRun: Bool {
        if required { return true }
        if case .success = availability { return true }
        return false
    }

    /// The comment shown when guest tests are skipped.
    static var skipComment: Comment {
        switch availability {
        case .success: Comment(rawValue: "guest peers present")
        case .failure(let error): Comment(rawValue: error.description)
        }
    }

    /// The peers, or an error naming what is missing (a test failure when thrown from a test).
    static func require() throws -> GuestPeers { try availability.get() }

    private static func find() -> Result<GuestPeers, GuestHarnessError> {
        var missing: [String] = []
        let qemu = executable("qemu-system-x86_64")
        if qemu == nil { missing.append("qemu-system-x86_64") }
        let storageDaemon = executable("qemu-storage-daemon")
        if storageDaemon == nil { missing.append("qemu-storage-daemon") }
        let busybox = ProcessInfo.processInfo.environment["VQTEST_BUSYBOX"] ?? executable("busybox")
        if let busybox {
            if isDynamicallyLinked(busybox) { missing.append("a static busybox (\(busybox) is dynamic)") }
        } else {
            missing.append("busybox")
        }
        let cpio = executable("cpio")
        if cpio == nil { missing.append("cpio") }
        let kernel = findKernel()
        if kernel == nil { missing.append("a kernel /boot/vmlinuz-* with /lib/modules/<version>") }
        guard let qemu, let storageDaemon, let busybox, let cpio, let kernel, missing.isEmpty else {
            return .failure(
                GuestHarnessError(
                    "guest peers missing: \(missing.joined(separator: ", ")); "
                        + "install with `apt-get install \(debianPackages)` (or run scripts/setup.sh)"
                )
            )
        }
        return .success(
            GuestPeers(qemu: qemu, storageDaemon: storageDaemon, kernel: kernel, busybox: busybox, cpio: cpio)
        )
    }

    /// The first executable `name` on PATH (plus /usr/sbin and /sbin), if any.
    static func executable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    private static func findKernel() -> String? {
        if let kernel = ProcessInfo.processInfo.environment["VQTEST_KERNEL"] {
            return access(kernel, R_OK) == 0 ? kernel : nil
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/boot")) ?? []
        let kernels = names.filter { $0.hasPrefix("vmlinuz-") }.sorted {
            $0.compare($1, options: .numeric) == .orderedAscending
        }
        for name in kernels.reversed() {
            let version = String(name.dropFirst("vmlinuz-".count))
            if access("/boot/\(name)", R_OK) == 0, access("/lib/modules/\(version)/modules.dep", R_OK) == 0 {
                return "/boot/\(name)"
            }
        }
        return nil
    }

    /// A dynamically linked executable names its loader (PT_INTERP) near the start of the file.
    private static func isDynamicallyLinked(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: 4096)) ?? Data()
        return head.range(of: Data("ld-linux".utf8)) != nil
    }
}

/// A failure of the harness itself or of a guest run, with everything needed to diagnose it.
struct GuestHarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Scratch directories

/// A temporary directory under /tmp (short, so socket paths fit in `sun_path`), removed by
/// `remove()`.
struct GuestScratch: Sendable {
    let path: String

    init(prefix: String = "vqtest") throws {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw GuestHarnessError("mkdtemp: \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
    }

    /// A path inside the directory.
    func path(_ name: String) -> String { "\(path)/\(name)" }

    /// Removes the directory and everything in it.
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

// MARK: - Child processes

/// A child process started with posix_spawn as the leader of its own process group, stdin from
/// /dev/null, stdout and stderr to files (the same path: one file, both streams), no inherited descriptors beyond those three. The group
/// lives and dies with its leader: when the leader is reaped, whatever is left in its group is
/// killed. Always reaped: `stop()` (or `kill` then `wait`); deinit kills and reaps.
final class GuestProcess: Sendable {
    let pid: pid_t
    let arguments: [String]
    let stdoutPath: String
    let stderrPath: String
    /// The wait status once reaped.
    private let status = Mutex<Int32?>(nil)

    /// Starts `arguments[0]` (a path, or a name looked up on PATH) with `arguments`.
    init(_ arguments: [String], stdoutPath: String = "/dev/null", stderrPath: String = "/dev/null") throws {
        precondition(!arguments.isEmpty)
        self.arguments = arguments
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if stderrPath == stdoutPath {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        } else {
            posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        }
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, 3) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGCHLD, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes,
            Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)
        )

        let argv = arguments.map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var child: pid_t = 0
        let result = posix_spawnp(&child, arguments[0], &actions, &attributes, argv, environ)
        guard result == 0 else {
            throw GuestHarnessError("cannot start \(arguments[0]): \(String(cString: strerror(result)))")
        }
        pid = child
    }

    deinit { stop(grace: .zero) }

    /// glibc's posix_spawn_file_actions_addclosefrom_np (2.34+), which Swift's Glibc module does
    /// not import: without it, only close-on-exec keeps this process's descriptors from the child.
    private static let addCloseFrom:
        (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32)? = {
            guard let handle = dlopen(nil, RTLD_NOW),
                let symbol = dlsym(handle, "posix_spawn_file_actions_addclosefrom_np")
            else { return nil }
            return unsafeBitCast(
                symbol,
                to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32).self
            )
        }()

    /// The wait status if the leader has exited (reaping it, and killing what is left of its
    /// group), else nil.
    var exitStatus: Int32? {
        status.withLock { status in
            if let status { return status }
            var raw: Int32 = 0
            if waitpid(pid, &raw, WNOHANG) == pid {
                status = raw
                // Stray members still pin the group's id, so this cannot reach another group.
                _ = Glibc.kill(-pid, SIGKILL)
            }
            return status
        }
    }

    var isRunning: Bool { exitStatus == nil }

    /// Sends `signal` to the leader (or, with `group`, to its whole process group) unless it has
    /// been reaped already.
    func kill(_ signal: Int32 = SIGKILL, group: Bool = false) {
        status.withLock { status in
            guard status == nil else { return }
            _ = Glibc.kill(group ? -pid : pid, signal)
        }
    }

    /// Waits for the leader to exit, up to `timeout`; returns its wait status, or nil on timeout.
    @discardableResult
    func wait(timeout: Duration = .seconds(3600)) -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let status = exitStatus { return status }
            if ContinuousClock.now >= deadline { return nil }
            usleep(10_000)
        }
    }

    /// SIGTERM to the process group, SIGKILL after `grace` (at once when zero); always reaps.
    /// Returns the wait status. Idempotent.
    @discardableResult
    func stop(grace: Duration = .seconds(5)) -> Int32 {
        if grace > .zero {
            kill(SIGTERM, group: true)
            if let status = wait(timeout: grace) { return status }
        }
        kill(SIGKILL, group: true)
        return wait() ?? -1
    }

    /// Runs `arguments` to completion (up to `timeout`) and returns its stdout; throws with its
    /// stderr if it fails.
    static func capture(_ arguments: [String], timeout: Duration = .seconds(600)) throws -> String {
        let scratch = try GuestScratch(prefix: "vqtest-capture")
        defer { scratch.remove() }
        let child = try GuestProcess(arguments, stdoutPath: scratch.path("out"), stderrPath: scratch.path("err"))
        guard let status = child.wait(timeout: timeout) else {
            child.stop(grace: .zero)
            throw GuestHarnessError("\(arguments.joined(separator: " ")) timed out after \(timeout)")
        }
        let output = guestReadText(scratch.path("out"))
        guard status == 0 else {
            throw GuestHarnessError(
                "\(arguments.joined(separator: " ")) failed (wait status \(status)): \(guestReadText(scratch.path("err")))"
            )
        }
        return output
    }
}

/// A file's text (empty when it cannot be read).
func guestReadText(_ path: String) -> String {
    (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
}

// MARK: - Back-ends

/// A vhost-user back-end process serving a UNIX socket: the control (qemu-storage-daemon) or any
/// other command. Its stdout and stderr go to one log file in its scratch directory.
final class GuestBackEnd: Sendable {
    let process: GuestProcess
    let socketPath: String
    private let scratch: GuestScratch

    /// Starts `arguments` and waits until `socketPath` exists as a socket (up to `readyTimeout`);
    /// throws with the back-end's log if it exits first or the socket never appears. A stale
    /// socket file is removed first.
    init(_ arguments: [String], socketPath: String, readyTimeout: Duration = .seconds(120)) throws {
        self.socketPath = socketPath
        scratch = try GuestScratch(prefix: "vqtest-backend")
        unlink(socketPath)
        let log = scratch.path("log")
        process = try GuestProcess(arguments, stdoutPath: log, stderrPath: log)
        let deadline = ContinuousClock.now + readyTimeout
        while !Self.isSocket(socketPath) {
            if let status = process.exitStatus {
                let output = guestReadText(log)
                scratch.remove()
                throw GuestHarnessError(
                    "back-end \(arguments.joined(separator: " ")) exited (wait status \(status)) "
                        + "before serving \(socketPath):\n\(output)"
                )
            }
            if ContinuousClock.now >= deadline {
                process.stop(grace: .zero)
                let output = guestReadText(log)
                scratch.remove()
                throw GuestHarnessError(
                    "back-end \(arguments.joined(separator: " ")) did not create \(socketPath) within "
                        + "\(readyTimeout):\n\(output)"
                )
            }
            usleep(20_000)
        }
    }

    /// qemu-storage-daemon exporting `imagePath` (raw, writable) as a vhost-user-blk device on
    /// `socketPath`. `exportOptions` are appended to the --export option (e.g. "num-queues=2").
    static func storageDaemon(
        imagePath: String,
        socketPath: String,
        exportOptions: [String] = []
    ) throws -> GuestBackEnd {
        let peers = try GuestPeers.require()
        try checkOptionValue(imagePath)
        try checkOptionValue(socketPath)
        let export =
            [
                "type=vhost-user-blk", "id=exp0", "node-name=disk0", "addr.type=unix", "addr.path=\(socketPath)",
                "writable=on",
            ] + exportOptions
        return try GuestBackEnd(
            [
                peers.storageDaemon,
                "--blockdev", "driver=file,node-name=file0,filename=\(imagePath)",
                "--blockdev", "driver=raw,node-name=disk0,file=file0",
                "--export", export.joined(separator: ","),
            ],
            socketPath: socketPath
        )
    }

    /// What the back-end printed so far.
    var log: String { guestReadText(scratch.path("log")) }

    /// Stops the back-end (SIGTERM to its process group, SIGKILL after `grace`), reaps it and
    /// removes its log. Idempotent. The socket file is left to the caller's scratch directory: a
    /// successor may already serve the same path (a restart), and an inode number is no proof
    /// that the file is still this back-end's.
    func stop(grace: Duration = .seconds(5)) {
        process.stop(grace: grace)
        scratch.remove()
    }

    deinit { stop(grace: .zero) }

    static func isSocket(_ path: String) -> Bool {
        var information = stat()
        return stat(path, &information) == 0 && (information.st_mode & S_IFMT) == S_IFSOCK
    }
}

/// QEMU option values are comma-separated: a path with a comma would need doubling; refuse it.
private func checkOptionValue(_ value: String) throws {
    if value.contains(",") { throw GuestHarnessError("a comma in \(value) would need escaping for QEMU") }
}

// MARK: - The guest's kernel and initramfs

/// The kernel and initramfs, built once per test process by scripts/guest/build-initramfs.sh
/// into a temporary directory removed when the process exits.
struct GuestArtifacts: Sendable {
    var kernel: String
    var initramfs: String

    /// The repository's root, from this file's path.
    static let repositoryRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }
        return url.path
    }()

    private static let built: Result<GuestArtifacts, any Error> = Result { try build() }

    /// The artifacts, building them on first use.
    static func shared() throws -> GuestArtifacts { try built.get() }

    private static func build() throws -> GuestArtifacts {
        let peers = try GuestPeers.require()
        let scratch = try GuestScratch(prefix: "vqtest-guest")
        artifactsDirectory.withLock { $0 = scratch.path }
        atexit {
            if let path = GuestArtifacts.artifactsDirectory.withLock({ $0 }) {
                try? FileManager.default.removeItem(atPath: path)
            }
        }
        var environment = ["VQTEST_KERNEL=\(peers.kernel)", "VQTEST_BUSYBOX=\(peers.busybox)"]
        environment.append("PATH=\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")")
        let output = try GuestProcess.capture(
            ["/usr/bin/env"] + environment + [
                "bash", "\(repositoryRoot)/scripts/guest/build-initramfs.sh", scratch.path,
            ]
        )
        let lines = output.split(separator: "\n").map(String.init)
        guard lines.count == 2 else {
            throw GuestHarnessError("build-initramfs.sh printed \(lines.count) lines, expected 2: \(output)")
        }
        return GuestArtifacts(kernel: lines[1], initramfs: lines[0])
    }

    private static let artifactsDirectory = Mutex<String?>(nil)
}

// MARK: - A guest run

/// The guest's vhost-user-blk disk: the socket and the device's options. nil leaves QEMU's
/// default (queue-size 128, event_idx on, indirect_desc on, num-queues = the vCPU count, 1).
struct GuestDisk: Sendable {
    var socketPath: String
    var queueSize: Int?
    var eventIndex: Bool?
    var indirectDescriptors: Bool?
    var queueCount: Int?
    /// `packed=on`: the guest's driver and the back-end use packed rings (VIRTIO_F_RING_PACKED).
    var packed: Bool?
    /// `-chardev socket,...,reconnect=1`: QEMU waits for the socket at start and reconnects
    /// (every second) when the back-end goes away; needed for a back-end restarted mid-run.
    var reconnect: Bool

    init(
        socketPath: String,
        queueSize: Int? = nil,
        eventIndex: Bool? = nil,
        indirectDescriptors: Bool? = nil,
        queueCount: Int? = nil,
        packed: Bool? = nil,
        reconnect: Bool = false
    ) {
        self.packed = packed
        self.socketPath = socketPath
        self.queueSize = queueSize
        self.eventIndex = eventIndex
        self.indirectDescriptors = indirectDescriptors
        self.queueCount = queueCount
        self.reconnect = reconnect
    }

    /// The `-chardev` and `-device` arguments.
    func qemuArguments() throws -> [String] {
        try checkOptionValue(socketPath)
        var chardev = "socket,id=vqdisk,path=\(socketPath)"
        if reconnect { chardev += ",reconnect=1" }
        var device = "vhost-user-blk-pci,chardev=vqdisk,id=vqblk0"
        if let queueSize { device += ",queue-size=\(queueSize)" }
        if let queueCount { device += ",num-queues=\(queueCount)" }
        if let eventIndex { device += ",event_idx=\(eventIndex ? "on" : "off")" }
        if let indirectDescriptors { device += ",indirect_desc=\(indirectDescriptors ? "on" : "off")" }
        if let packed { device += ",packed=\(packed ? "on" : "off")" }
        return ["-chardev", chardev, "-device", device]
    }
}

/// The workloads of scripts/guest/init.sh.
enum GuestWorkload: String, Sendable {
    /// Marker, whole-disk md5, serial, size; 1 MiB pattern written at 4 MiB and read back.
    case check
    /// 48 MiB of the pattern written at 8 MiB in 64 KiB direct-I/O blocks (phase=writing, then
    /// phase=written, phase=flushed), read back.
    case longWrite = "long-write"
    /// 64 MiB sequential direct-I/O read then write (zeros from offset 0), in MiB/s.
    case perf
}

/// One `VQTEST key=value` line from the guest.
struct GuestLine: Sendable, Equatable, CustomStringConvertible {
    var key: String
    var value: String
    var description: String { "\(key)=\(value)" }
}

/// What a guest run printed.
struct GuestResult: Sendable {
    /// Every `VQTEST` line, in order.
    var lines: [GuestLine]
    /// The whole serial console (kernel messages and the workload's output).
    var console: String
    /// QEMU's stderr.
    var qemuStderr: String
    /// From QEMU's start to its exit.
    var elapsed: Duration

    /// The last value printed for `key`.
    subscript(key: String) -> String? { lines.last { $0.key == key }?.value }

    /// Every value printed for `key`, in order.
    func values(_ key: String) -> [String] { lines.filter { $0.key == key }.map(\.value) }

    /// The guest reached the end of its workload.
    var done: Bool { self["done"] == "1" }

    /// The last `count` lines of the console.
    func consoleTail(_ count: Int = 30) -> String { lastLines(console, count) }
}

/// The last `count` lines of `text`.
private func lastLines(_ text: String, _ count: Int) -> String {
    text.split(separator: "\n", omittingEmptySubsequences: false).suffix(count).joined(separator: "\n")
}

/// Boots the guest under QEMU (TCG, `cpus` vCPUs, one by default, `memoryMiB` of shared memfd memory so a
/// vhost-user back-end can map it) with `disk` and runs `workload`.
struct GuestRun: Sendable {
    var workload: GuestWorkload
    var disk: GuestDisk
    /// QEMU is killed and the run fails when it has not exited by then (TCG boots in ~5–15 s).
    var timeout: Duration = .seconds(240)
    var memoryMiB: Int = 256
    /// Extra kernel command-line words.
    var kernelArguments: [String] = []
    /// The guest's vCPUs (`-smp`). Linux's virtio-blk uses at most one request queue per CPU,
    /// and blk-mq sends a CPU's I/O down its own queue: a disk with N queues needs N CPUs to use
    /// them all (the `check` workload then reads from every CPU at once).
    var cpus: Int = 1

    init(
        workload: GuestWorkload,
        disk: GuestDisk,
        timeout: Duration = .seconds(240),
        memoryMiB: Int = 256,
        kernelArguments: [String] = [],
        cpus: Int = 1
    ) {
        self.workload = workload
        self.disk = disk
        self.timeout = timeout
        self.memoryMiB = memoryMiB
        self.kernelArguments = kernelArguments
        self.cpus = cpus
    }

    /// The QEMU command line, console to `consolePath`.
    func qemuArguments(peers: GuestPeers, artifacts: GuestArtifacts, consolePath: String) throws -> [String] {
        try checkOptionValue(consolePath)
        let append =
            ["console=ttyS0", "panic=-1", "loglevel=4", "vqtest.workload=\(workload.rawValue)"] + kernelArguments
        return [
            peers.qemu,
            "-accel", "tcg", "-cpu", "max", "-smp", "\(cpus)", "-m", "\(memoryMiB)M",
            "-object", "memory-backend-memfd,id=mem,size=\(memoryMiB)M,share=on",
            "-numa", "node,memdev=mem",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "file:\(consolePath)",
            "-kernel", artifacts.kernel, "-initrd", artifacts.initramfs,
            "-append", append.joined(separator: " "),
        ] + (try disk.qemuArguments())
    }

    /// Runs the guest to the end. `onLine` is called on this thread for each `VQTEST` line as
    /// it appears on the console (e.g. kill the back-end when `phase=writing` shows); if it
    /// throws, QEMU is killed and the error is rethrown. Throws, naming the console's last
    /// lines, if QEMU times out, fails, or exits before the guest printed `done=1`.
    func run(onLine: (GuestLine) throws -> Void = { _ in }) throws -> GuestResult {
        let peers = try GuestPeers.require()
        let artifacts = try GuestArtifacts.shared()
        let scratch = try GuestScratch(prefix: "vqtest-run")
        defer { scratch.remove() }
        let consolePath = scratch.path("console.log")
        let stderrPath = scratch.path("qemu.stderr")
        guard let created = fopen(consolePath, "w") else { throw GuestHarnessError("cannot create \(consolePath)") }
        fclose(created)
        let console = open(consolePath, O_RDONLY | O_CLOEXEC)
        guard console >= 0 else { throw GuestHarnessError("cannot open \(consolePath)") }
        defer { close(console) }

        let arguments = try qemuArguments(peers: peers, artifacts: artifacts, consolePath: consolePath)
        // coreutils' timeout bounds QEMU even if this process dies without killing it.
        let bound = Int(timeout.components.seconds) + 60
        let watchdog = GuestPeers.executable("timeout").map { [$0, "-s", "KILL", "\(bound)"] } ?? []
        let started = ContinuousClock.now
        let qemu = try GuestProcess(watchdog + arguments, stdoutPath: stderrPath, stderrPath: stderrPath)
        // SIGTERM first: `timeout` passes it on and reaps QEMU (a SIGKILL would orphan it).
        defer { qemu.stop(grace: .seconds(5)) }

        var text: [UInt8] = []
        var lines: [GuestLine] = []
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        func drain() throws {
            while true {
                let count = buffer.withUnsafeMutableBytes { read(console, $0.baseAddress, $0.count) }
                guard count > 0 else { return }
                text += buffer[0..<count]
                pending += buffer[0..<count]
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let raw = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    let line = raw.trimmingCharacters(in: CharacterSet(charactersIn: "\r"))
                    guard line.hasPrefix("VQTEST ") else { continue }
                    let pair = line.dropFirst("VQTEST ".count)
                    let key = pair.prefix { $0 != "=" }
                    let value = pair.dropFirst(key.count + 1)
                    let parsed = GuestLine(key: String(key), value: String(value))
                    lines.append(parsed)
                    try onLine(parsed)
                }
            }
        }
        func failure(_ reason: String) -> GuestHarnessError {
            let console = String(decoding: text, as: UTF8.self)
            return GuestHarnessError(
                "\(reason)\nQEMU: \(arguments.joined(separator: " "))\nQEMU stderr:\n\(guestReadText(stderrPath))"
                    + "\nlast console lines:\n\(lastLines(console, 30))"
            )
        }

        let deadline = started + timeout
        var status: Int32? = nil
        while status == nil {
            try drain()
            status = qemu.exitStatus
            if status == nil {
                if ContinuousClock.now >= deadline {
                    qemu.stop(grace: .seconds(5))
                    try drain()
                    throw failure("the guest did not finish within \(timeout) (QEMU killed)")
                }
                usleep(20_000)
            }
        }
        try drain()
        let elapsed = ContinuousClock.now - started
        let result = GuestResult(
            lines: lines,
            console: String(decoding: text, as: UTF8.self),
            qemuStderr: guestReadText(stderrPath),
            elapsed: elapsed
        )
        guard let status, status == 0 else {
            throw failure("QEMU failed (wait status \(status ?? -1))")
        }
        guard result.done else { throw failure("the guest powered off before printing VQTEST done=1") }
        return result
    }
}

// MARK: - Disk images

/// A raw disk image made for the guest: sparse, with an ASCII marker at the start of sector 0
/// (NUL-padded) and seeded pseudo-random bytes in [512 B, 2 MiB) and in the last 64 KiB, so the
/// guest's whole-disk md5 is meaningful; zeros elsewhere.
struct GuestImage: Sendable {
    let path: String
    let size: Int
    let marker: String

    /// Where the `check` workload writes its pattern, and how much.
    static let checkPatternOffset = 4 << 20
    static let checkPatternLength = 1 << 20
    /// Where the `long-write` workload writes its pattern, and how much.
    static let longWritePatternOffset = 8 << 20
    static let longWritePatternLength = 48 << 20

    /// Creates (or replaces) the image at `path`. The marker is `VQMARKER-` and 16 hex digits.
    static func create(at path: String, mebibytes: Int, seed: UInt64 = 0x5EED_F00D) throws -> GuestImage {
        precondition(mebibytes >= 4)
        let size = mebibytes << 20
        let marker = "VQMARKER-" + String(format: "%016llx", UInt64.random(in: 0...UInt64.max))
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw GuestHarnessError("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else { throw GuestHarnessError("ftruncate \(path) failed") }
        var generator = SplitMix64(seed: seed)
        var sector = [UInt8](repeating: 0, count: 512)
        sector.replaceSubrange(0..<marker.utf8.count, with: marker.utf8)
        try write(fd, sector, at: 0)
        try write(fd, generator.bytes((2 << 20) - 512), at: 512)
        try write(fd, generator.bytes(64 << 10), at: size - (64 << 10))
        guard fsync(fd) == 0 else { throw GuestHarnessError("fsync \(path) failed") }
        return GuestImage(path: path, size: size, marker: marker)
    }

    /// The number of 512-byte sectors.
    var sectors: Int { size / 512 }

    /// The md5 of the whole image, as lowercase hex.
    func md5() throws -> String { try md5Hex(path) }

    /// The md5 of `length` bytes at `offset`, as lowercase hex.
    func md5(offset: Int, length: Int) throws -> String { try md5Hex(path, offset: offset, length: length) }

    private static func write(_ fd: Int32, _ bytes: [UInt8], at offset: Int) throws {
        let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard written == bytes.count else { throw GuestHarnessError("short write at \(offset)") }
    }
}

/// The guest's deterministic pattern: the line `VQPATTERN-0123456789abcdef` repeated (yes(1)),
/// cut to a length.
enum GuestPattern {
    static let line = "VQPATTERN-0123456789abcdef"

    /// The md5 of the first `length` bytes of the pattern, as lowercase hex.
    static func md5(length: Int) throws -> String {
        try firstWord(
            GuestProcess.capture(["/bin/sh", "-c", "yes \"$1\" | head -c \"$2\" | md5sum", "sh", line, "\(length)"])
        )
    }
}

/// The md5 of a file, or of `length` bytes at `offset`, as lowercase hex (md5sum and dd from
/// coreutils).
private func md5Hex(_ path: String, offset: Int? = nil, length: Int? = nil) throws -> String {
    if let offset, let length {
        return try firstWord(
            GuestProcess.capture([
                "/bin/sh", "-c",
                "dd if=\"$1\" bs=1M iflag=skip_bytes,count_bytes skip=\"$2\" count=\"$3\" status=none | md5sum",
                "sh", path, "\(offset)", "\(length)",
            ])
        )
    }
    return try firstWord(GuestProcess.capture(["md5sum", path]))
}

private func firstWord(_ text: String) throws -> String {
    guard let word = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).first, word.count == 32 else {
        throw GuestHarnessError("not an md5sum output: \(text)")
    }
    return String(word)
}

/// A small seeded generator (SplitMix64) for reproducible image contents.
private struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func bytes(_ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < count {
            var word = next()
            for _ in 0..<8 where index < count {
                bytes[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        return bytes
    }
}
