import CVirtqueueSandbox
import Glibc

extension SandboxPolicy {
    /// Confines the calling process under this policy for good, and reports it: what
    /// `SandboxConfinement` does in a device child, for any process that needs the same (a
    /// vhost-user back-end's worker, say). In order:
    ///
    /// 1. changes the working directory to `/`;
    /// 2. closes every descriptor except `descriptors` — standard input included unless kept;
    /// 3. lowers `RLIMIT_NOFILE` (to `openFileLimit`, or just above the highest kept descriptor)
    ///    and `RLIMIT_CORE` to 0, and — unless `allowingThreads` — `RLIMIT_NPROC` to 0;
    /// 4. installs the SIGSYS reporter, sets `PR_SET_NO_NEW_PRIVS` and loads the filter;
    /// 5. under the filter, sends the confinement report (the kernel's seccomp mode and this
    ///    policy's ``digest``) on `roles[.report]`, which the parent checks with
    ///    ``confinementProblem(report:processID:)``.
    ///
    /// - Parameters:
    ///   - descriptors: The descriptors to keep open.
    ///   - roles: The number of each role in this process; `.report` is where the report goes.
    ///   - openFileLimit: The descriptor limit; `nil`: just above the highest kept one. A process
    ///     that receives descriptors later (over a socket) needs room for them.
    ///   - allowingThreads: Whether to leave `RLIMIT_NPROC` (threads count against it); the
    ///     filter decides then whether `clone` may make a thread.
    /// - Throws: ``SandboxError`` naming the step that failed.
    public func confineThisProcess(
        keeping descriptors: [CInt],
        roles: [FileDescriptorRole: Int32],
        openFileLimit: UInt? = nil,
        allowingThreads: Bool = false
    ) throws(SandboxError) {
        try confineThisProcess(
            keeping: descriptors,
            descriptorsByRole: roles.mapValues { [$0] },
            openFileLimit: openFileLimit,
            allowingThreads: allowingThreads
        )
    }

    /// Confines the calling process as ``confineThisProcess(keeping:roles:openFileLimit:allowingThreads:)``
    /// does, where a role may be played by several descriptors — the kick sockets of a device
    /// that serves several queues, say: a rule on a role allows the call on each of them.
    /// `descriptorsByRole[.report]` must name one descriptor; the report goes there.
    ///
    /// - Throws: ``SandboxError`` naming the step that failed.
    public func confineThisProcess(
        keeping descriptors: [CInt],
        descriptorsByRole roles: [FileDescriptorRole: [Int32]],
        openFileLimit: UInt? = nil,
        allowingThreads: Bool = false
    ) throws(SandboxError) {
        guard let reports = roles[.report], reports.count == 1, let report = reports.first else {
            throw SandboxError(.invalidPolicy, "confining a process needs a report descriptor")
        }
        guard chdir("/") == 0 else { throw SandboxError.system("chdir(\"/\")") }
        guard descriptors.withUnsafeBufferPointer({ vq_sandbox_close_other_fds($0.baseAddress, CInt($0.count)) }) == 0
        else {
            throw SandboxError.system("closing inherited descriptors")
        }
        if !descriptors.contains(0), close(0) != 0, errno != EBADF { throw SandboxError.system("close(0)") }
        let limit = openFileLimit ?? (UInt(descriptors.max() ?? 2) + 1)
        let lowered =
            allowingThreads ? vq_sandbox_lower_limits_keeping_threads(limit) : vq_sandbox_lower_limits(limit)
        guard lowered == 0 else { throw SandboxError.system("setrlimit") }
        do {
            try install(descriptorsByRole: roles)
        } catch {
            throw SandboxError(.invalidPolicy, "cannot load the seccomp filter: \(error)")
        }
        // Under the filter now: the two calls below are the ones it always allows.
        let bytes = ConfinementReport(seccompMode: vq_sandbox_seccomp_mode(), policyDigest: digest).encoded()
        let written = bytes.withUnsafeBytes { write(report, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw SandboxError.system("sending the confinement report") }
    }

    /// What is wrong with the confinement report `bytes` that process `processID` sent (after
    /// ``confineThisProcess(keeping:roles:openFileLimit:allowingThreads:)``), or `nil` if it
    /// proves the process runs under this policy: the digest must be this policy's, the mode the
    /// process read must be 2 (filter), and — where `/proc` is mounted — so must the kernel's
    /// `Seccomp:` line for the process, which it cannot forge. Call it before reaping the process.
    ///
    /// - Returns: The failure and an account that names the values, or `nil`.
    public func confinementProblem(report bytes: [UInt8], processID: Int32) -> (
        SandboxError.ConfinementFailure, String
    )? {
        guard let report = ConfinementReport(parsing: bytes) else {
            if let violation = SandboxViolation(report: bytes) {
                return (.endedBeforeReport, "its filter killed it before it reported its confinement: \(violation)")
            }
            return (.malformedReport, "it sent \(bytes.count) bytes that are not a confinement report")
        }
        guard report.policyDigest == digest else {
            return (
                .policyMismatch,
                "it loaded a policy with digest \(SandboxedDevice.hex(report.policyDigest)), not the one the "
                    + "launcher sent (digest \(SandboxedDevice.hex(digest)))"
            )
        }
        guard report.seccompMode == ConfinementReport.filterMode else {
            return (.notFiltered, "it reports seccomp mode \(report.seccompMode), not 2 (filter)")
        }
        if let kernelMode = SandboxedDevice.seccompMode(ofProcess: processID),
            kernelMode != ConfinementReport.filterMode
        {
            return (.notFiltered, "the kernel reports Seccomp: \(kernelMode) for a thread of it, not 2 (filter)")
        }
        return nil
    }
}
