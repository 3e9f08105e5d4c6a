import Glibc
import VirtqueueSharedMemory

extension SandboxedDevice {
    /// Checks that a freshly started child runs under `policy`, or kills it, reaps it and throws.
    ///
    /// Waits up to `timeout` for the child's confinement report on the liveness socket (noticing
    /// its death meanwhile), then requires the digest of `policy`, the seccomp mode 2 (filter)
    /// from the child's `prctl(PR_GET_SECCOMP)`, and — where `/proc` is mounted — `Seccomp: 2`
    /// in the kernel's `/proc/PID/task/TID/status` for every thread of the child, which the
    /// child cannot forge.
    ///
    /// - Throws: ``SandboxError/Code-swift.struct/notConfined`` naming what was wrong.
    static func verifyConfinement(
        of process: DeviceProcess,
        policy: SandboxPolicy,
        timeout: Duration
    ) throws(SandboxError) {
        let (failure, account) = confinementProblem(of: process, policy: policy, timeout: timeout)
        guard let failure else { return }
        // A child that is ending (its descriptors are closed before it exits) gets a moment to
        // finish, so its own exit status is reported; any other is killed at once. Then reaped.
        if failure != .endedBeforeReport { try? process.kill(signal: SIGKILL) }
        process.stop(gracePeriod: .seconds(2))
        let status = try? process.waitForExit()
        let ending = status.map { " (reaped: \($0))" } ?? ""
        throw SandboxError(
            .notConfined,
            "sandboxed device \(process.deviceName) (pid \(process.processID)) is not confined: \(account)\(ending)",
            exitStatus: status,
            deviceName: process.deviceName,
            confinementFailure: failure,
            processID: process.processID
        )
    }

    /// What is wrong with the child's confinement, or `nil` (and an empty account) if nothing is.
    static func confinementProblem(
        of process: DeviceProcess,
        policy: SandboxPolicy,
        timeout: Duration
    ) -> (SandboxError.ConfinementFailure?, String) {
        let bytes: [UInt8]
        switch process.waitForLivenessMessage(maxByteCount: 2 * ConfinementReport.byteCount, timeout: timeout) {
        case .timedOut:
            return (.noReport, "it sent no confinement report within \(timeout)")
        case .ended:
            return (.endedBeforeReport, "it ended, or closed its liveness socket, before it reported its confinement")
        case .message(let message):
            bytes = message
        }
        if DeviceStatusRecord(parsing: bytes) != nil {
            // The device host's report on its device, from a host that did not confine itself.
            return (
                .noReport,
                "it sent no confinement report, only its device's status: it runs unconfined"
            )
        }
        if let (failure, account) = policy.confinementProblem(report: bytes, processID: process.processID) {
            return (failure, account)
        }
        return (nil, "")
    }

    /// The lowest `Seccomp:` field of `/proc/PID/task/TID/status` over the process's threads
    /// (a thread with no filter reports 0), or `nil` where none can be read.
    ///
    /// The child is not reaped yet, so its process id still names it.
    static func seccompMode(ofProcess pid: Int32) -> Int32? {
        guard let tasks = opendir("/proc/\(pid)/task") else { return seccompMode(statusPath: "/proc/\(pid)/status") }
        defer { closedir(tasks) }
        var lowest: Int32?
        while let entry = readdir(tasks) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let thread = Int32(name) else { continue }
            if let mode = seccompMode(statusPath: "/proc/\(pid)/task/\(thread)/status") {
                lowest = min(lowest ?? mode, mode)
            }
        }
        return lowest
    }

    /// The `Seccomp:` field of the status file at `path`, or `nil` where it cannot be read.
    static func seccompMode(statusPath path: String) -> Int32? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 16 {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += buffer[0..<count]
        }
        let prefix = "Seccomp:"
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix(prefix) {
            return Int32(line.dropFirst(prefix.count).trimmingPrefix(while: \.isWhitespace))
        }
        return nil
    }

    static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }
}
