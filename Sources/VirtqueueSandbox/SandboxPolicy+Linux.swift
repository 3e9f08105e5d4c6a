import CSeccomp
import CVirtqueueSandbox
import Glibc
public import Virtqueue

extension SandboxPolicy {
    /// Confines the calling process for good: installs the SIGSYS reporter, sets
    /// `PR_SET_NO_NEW_PRIVS`, and loads this policy as a seccomp filter whose default action
    /// traps (the reporter records the call on `reportDescriptor` and exits).
    ///
    /// Call this in the device child after it has mapped its region and closed every other file
    /// descriptor, and before it reads ring memory.
    ///
    /// Besides the policy's rules the filter always allows two calls the confinement report
    /// needs: `prctl(PR_GET_SECCOMP, …)` (no other `prctl` option) and `write` on the
    /// ``FileDescriptorRole/report`` descriptor.
    ///
    /// - Parameters:
    ///   - fileDescriptors: The number each role has in this process.
    /// - Throws: `VirtqueueError` with `VirtqueueError/Code/invalidConfiguration`
    ///   for a system call name libseccomp does not know, or the `errno` of a failed step.
    public func install(fileDescriptors: [FileDescriptorRole: Int32]) throws(VirtqueueError) {
        try install(descriptorsByRole: fileDescriptors.mapValues { [$0] })
    }

    /// Confines the calling process as ``install(fileDescriptors:)`` does, where a role may be
    /// played by several descriptors (a rule on the role allows the call on each); the report
    /// descriptor is the first of `.report`.
    ///
    /// - Throws: `VirtqueueError` as ``install(fileDescriptors:)`` does.
    public func install(descriptorsByRole fileDescriptors: [FileDescriptorRole: [Int32]]) throws(VirtqueueError) {
        let report = fileDescriptors[.report]?.first
        if let report, vq_sandbox_install_sigsys_reporter(report) != 0 {
            throw Self.failure("installing the SIGSYS reporter")
        }
        guard vq_sandbox_set_no_new_privs() == 0 else { throw Self.failure("prctl(PR_SET_NO_NEW_PRIVS)") }
        let filter = try makeFilter(fileDescriptors: fileDescriptors, defaultAction: cseccomp_act_trap())
        defer { seccomp_release(filter) }
        try Self.addReportRules(filter, report: report)
        // Every thread of the process, not only the caller: a thread started before the filter
        // (by the host's own code before it hands over, or a runtime's) would otherwise run
        // unfiltered for good. The kernel also gives those threads PR_SET_NO_NEW_PRIVS.
        guard seccomp_attr_set(filter, SCMP_FLTATR_CTL_TSYNC, 1) == 0 else {
            throw VirtqueueError(.invalidConfiguration, "seccomp_attr_set(SCMP_FLTATR_CTL_TSYNC) failed")
        }
        let result = seccomp_load(filter)
        guard result == 0 else {
            throw VirtqueueError(.invalidConfiguration, "seccomp_load failed", underlyingErrno: -result)
        }
    }

    /// Builds the libseccomp filter context for this policy; the caller releases it.
    func makeFilter(
        fileDescriptors: [FileDescriptorRole: [Int32]],
        defaultAction: UInt32
    ) throws(VirtqueueError) -> scmp_filter_ctx {
        guard let filter = seccomp_init(defaultAction) else {
            throw VirtqueueError(.invalidConfiguration, "seccomp_init failed")
        }
        do throws(VirtqueueError) {
            for rule in rules {
                let number = seccomp_syscall_resolve_name(rule.systemCall)
                guard number != __NR_SCMP_ERROR else {
                    throw VirtqueueError(
                        .invalidConfiguration,
                        "system call \"\(rule.systemCall)\" is unknown to libseccomp"
                    )
                }
                // A call that exists in libseccomp's tables but not on this architecture (poll on
                // arm64, say) resolves to a negative pseudo-number: nothing to allow.
                guard number >= 0 else { continue }
                switch rule.condition {
                case .always:
                    try Self.add(filter, number, rule, conditions: [])
                case .onFileDescriptors(let roles):
                    for role in roles.sorted(by: { $0.description < $1.description }) {
                        for descriptor in fileDescriptors[role] ?? [] {
                            let condition = scmp_arg_cmp(
                                arg: 0,
                                op: SCMP_CMP_EQ,
                                datum_a: scmp_datum_t(UInt32(bitPattern: descriptor)),
                                datum_b: 0
                            )
                            try Self.add(filter, number, rule, conditions: [condition])
                        }
                    }
                case .withoutExecute(let argument):
                    let condition = scmp_arg_cmp(
                        arg: UInt32(argument),
                        op: SCMP_CMP_MASKED_EQ,
                        datum_a: scmp_datum_t(PROT_EXEC),
                        datum_b: 0
                    )
                    try Self.add(filter, number, rule, conditions: [condition])
                case .withFlags(let argument, let mask):
                    let condition = scmp_arg_cmp(
                        arg: UInt32(argument),
                        op: SCMP_CMP_MASKED_EQ,
                        datum_a: scmp_datum_t(mask),
                        datum_b: scmp_datum_t(mask)
                    )
                    try Self.add(filter, number, rule, conditions: [condition])
                case .unlessArgument(let argument, let value):
                    let condition = scmp_arg_cmp(
                        arg: UInt32(argument),
                        op: SCMP_CMP_NE,
                        datum_a: scmp_datum_t(value),
                        datum_b: 0
                    )
                    try Self.add(filter, number, rule, conditions: [condition])
                case .failsWith(let error):
                    try Self.add(
                        filter,
                        number,
                        rule,
                        conditions: [],
                        action: cseccomp_act_errno(UInt16(truncatingIfNeeded: error))
                    )
                }
            }
        } catch {
            seccomp_release(filter)
            throw error
        }
        return filter
    }

    /// Adds the rules the confinement report needs whatever the policy: `prctl` with
    /// `PR_GET_SECCOMP` as its first argument, and `write` on the report descriptor.
    static func addReportRules(_ filter: scmp_filter_ctx, report: Int32?) throws(VirtqueueError) {
        let getSeccomp = scmp_arg_cmp(
            arg: 0,
            op: SCMP_CMP_EQ,
            datum_a: scmp_datum_t(VQ_SANDBOX_PR_GET_SECCOMP),
            datum_b: 0
        )
        try add(filter, seccomp_syscall_resolve_name("prctl"), Rule("prctl"), conditions: [getSeccomp])
        if let report {
            let onReport = scmp_arg_cmp(
                arg: 0,
                op: SCMP_CMP_EQ,
                datum_a: scmp_datum_t(UInt32(bitPattern: report)),
                datum_b: 0
            )
            try add(filter, seccomp_syscall_resolve_name("write"), Rule("write"), conditions: [onReport])
        }
    }

    static func add(
        _ filter: scmp_filter_ctx,
        _ number: Int32,
        _ rule: Rule,
        conditions: [scmp_arg_cmp],
        action: UInt32 = cseccomp_act_allow()
    ) throws(VirtqueueError) {
        let result = conditions.withUnsafeBufferPointer { buffer in
            seccomp_rule_add_array(filter, action, number, UInt32(buffer.count), buffer.baseAddress)
        }
        guard result == 0 else {
            throw VirtqueueError(
                .invalidConfiguration,
                "seccomp_rule_add_array failed for \(rule)",
                underlyingErrno: -result
            )
        }
    }

    static func failure(_ step: String) -> VirtqueueError {
        VirtqueueError(.invalidConfiguration, "\(step) failed", underlyingErrno: errno)
    }
}

/// What a sandboxed device tried to do when its filter killed it.
public struct SandboxViolation: Hashable, Sendable, CustomStringConvertible {
    /// The system call's name for the architecture it was made on (`"openat"`), or
    /// `"syscall <number>"` if libseccomp does not know it.
    public let systemCall: String
    /// The system call number.
    public let number: Int32
    /// The `AUDIT_ARCH_*` value of the call.
    public let architecture: UInt32

    /// Decodes the record the child's SIGSYS reporter wrote. The bytes come from the child, so
    /// they are validated like any peer data: `nil` unless they are exactly one well-formed record.
    public init?(report bytes: [UInt8]) {
        guard bytes.count == MemoryLayout<vq_sandbox_report>.size else { return nil }
        let report = bytes.withUnsafeBytes { $0.loadUnaligned(as: vq_sandbox_report.self) }
        guard report.magic == VQ_SANDBOX_REPORT_MAGIC, report.syscall >= 0 else { return nil }
        number = report.syscall
        architecture = report.arch
        if let name = seccomp_syscall_resolve_num_arch(report.arch, report.syscall) {
            systemCall = String(cString: name)
            free(name)
        } else {
            systemCall = "syscall \(report.syscall)"
        }
    }

    public var description: String { "forbidden system call \(systemCall) (#\(number))" }
}
