/// The system calls a sandboxed device may make: a seccomp allow-list with argument conditions.
///
/// Everything not on the list kills the device: the call traps, a tiny signal handler records
/// which call it was for the supervisor, and the process exits. The default,
/// ``deviceLoop``, is the measured minimum for a device serving a virtqueue over notification
/// sockets (see `docs/sandbox.md` for how it was measured and how to measure your own device).
///
/// File descriptors are named by role, not number: the launcher resolves them to the numbers
/// the child actually holds, so `recvfrom` is allowed on the kick socket only, `sendto` on the
/// call socket only, and `write` on the report socket and standard error only.
public struct SandboxPolicy: Hashable, Sendable, CustomStringConvertible {
    /// A file descriptor the child holds, by role.
    public enum FileDescriptorRole: Hashable, Sendable, CustomStringConvertible {
        /// The kick channel's wait end: the driver notifies the device through it, and the device
        /// receives (`recvfrom`) the notifications.
        case kick
        /// The call channel's notify end: the device sends (`sendto`) its notifications on it.
        case call
        /// The descriptor whose hang-up tells the device the driver has gone; polled only.
        case liveness
        /// The pipe the SIGSYS reporter writes a violation record to.
        case report
        /// The child's standard output.
        case standardOutput
        /// The child's standard error (diagnostics).
        case standardError
        /// The device's `index`-th configured descriptor (`DeviceConfiguration/fileDescriptors`).
        case device(Int)

        public var description: String {
            switch self {
            case .kick: "kick"
            case .call: "call"
            case .liveness: "liveness"
            case .report: "report"
            case .standardOutput: "stdout"
            case .standardError: "stderr"
            case .device(let index): "device\(index)"
            }
        }
    }

    /// When a listed call is allowed.
    public enum Condition: Hashable, Sendable {
        /// Always.
        case always
        /// Only when the first argument is one of these file descriptors.
        case onFileDescriptors(Set<FileDescriptorRole>)
        /// Only when the protection argument (argument index `argument`) lacks `PROT_EXEC`.
        case withoutExecute(argument: Int)
        /// Only when argument `argument` has every bit of `mask` set — `clone` with
        /// `CLONE_THREAD`: a new thread, never a new process.
        case withFlags(argument: Int, mask: UInt64)
        /// Only when argument `argument` is not `value` — `rt_sigaction` for any signal but
        /// `SIGSYS`, whose handler is the sandbox's reporter.
        case unlessArgument(Int, equals: UInt64)
        /// Never carried out, but refused with `errno` instead of killing the process: `clone3`
        /// (whose flags live in memory a filter cannot read) fails with `ENOSYS`, and the C
        /// library falls back to `clone`, whose flags the filter checks.
        case failsWith(errno: Int32)
    }

    /// One allowed system call, by its name in the kernel's table (`"read"`, `"mmap"`…).
    public struct Rule: Hashable, Sendable, CustomStringConvertible {
        public var systemCall: String
        public var condition: Condition

        public init(_ systemCall: String, _ condition: Condition = .always) {
            self.systemCall = systemCall
            self.condition = condition
        }

        public var description: String {
            switch condition {
            case .always: systemCall
            case .onFileDescriptors(let roles):
                "\(systemCall)(fd ∈ {\(roles.map(\.description).sorted().joined(separator: ", "))})"
            case .withoutExecute(let argument): "\(systemCall)(arg\(argument) & PROT_EXEC == 0)"
            case .withFlags(let argument, let mask):
                "\(systemCall)(arg\(argument) & 0x\(String(mask, radix: 16)) == 0x\(String(mask, radix: 16)))"
            case .unlessArgument(let argument, let value): "\(systemCall)(arg\(argument) != \(value))"
            case .failsWith(let error): "\(systemCall) → errno \(error)"
            }
        }
    }

    /// The allowed calls; anything else kills the device.
    public var rules: [Rule]

    /// Creates a policy from its rules.
    public init(rules: [Rule]) {
        self.rules = rules
    }

    /// The measured minimum for a device serving a queue, plus the allocator's memory calls.
    ///
    /// Measured with `strace -f` over the sandbox tests (`docs/sandbox.md` has the commands and
    /// the counts): a confined device loop makes `poll`, `recvfrom` on the kick socket, `sendto`
    /// on the call socket, and at exit `munmap`, `brk`, `close` and `exit_group`. The policy
    /// also allows `ppoll`, which `poll` becomes on architectures without it, `mmap`, `mprotect`
    /// and `madvise` for the allocator (never with `PROT_EXEC`), and `write` to standard error
    /// and to the liveness socket, where the SIGSYS reporter leaves its record. Nothing else is
    /// allowed on the notification sockets: no `read` or `write`, which would honour a file
    /// status flag (`O_NONBLOCK`) instead of the per-call `MSG_DONTWAIT`.
    public static let deviceLoop = SandboxPolicy(rules: [
        Rule("poll"),
        Rule("ppoll"),
        Rule("recvfrom", .onFileDescriptors([.kick])),
        Rule("sendto", .onFileDescriptors([.call])),
        Rule("write", .onFileDescriptors([.report, .standardError])),
        Rule("brk"),
        Rule("mmap", .withoutExecute(argument: 2)),
        Rule("mprotect", .withoutExecute(argument: 2)),
        Rule("munmap"),
        Rule("madvise"),
        Rule("close"),
        Rule("exit_group"),
    ])

    /// This policy also letting the process start threads and end them: what a device that
    /// serves several queues needs, one thread per further queue. `SandboxBackend` launches such a
    /// device under this policy (and says so in ``SandboxedDevice/policy``).
    ///
    /// Threads only, never a process: `clone` is allowed only with `CLONE_THREAD` set, `clone3`
    /// (whose flags a filter cannot read) fails with `ENOSYS` so the C library falls back to
    /// `clone`. Besides, what starting, running and joining a thread calls, measured with the
    /// SIGSYS reporter (`docs/sandbox.md`): `rt_sigprocmask` around `clone`, `set_robust_list`
    /// and `rseq` in the new thread, `futex` to join it, `gettid` and `exit` when it ends, and `rt_sigaction`
    /// from the C library's first thread start — for any signal but `SIGSYS`, so the SIGSYS
    /// reporter cannot be replaced and a forbidden call still ends the process. Memory for the
    /// stacks comes through `mmap`, `mprotect` and `munmap`, which the policy allows already
    /// (never with `PROT_EXEC`). Adding it twice changes nothing.
    public var allowingThreads: SandboxPolicy {
        var policy = self
        for rule in Self.threadRules where !policy.rules.contains(rule) {
            policy.rules.append(rule)
        }
        return policy
    }

    /// The rules ``allowingThreads`` adds.
    static let threadRules: [Rule] = [
        Rule("clone", .withFlags(argument: 0, mask: 0x0001_0000)),  // CLONE_THREAD
        Rule("clone3", .failsWith(errno: 38)),  // ENOSYS
        Rule("rt_sigprocmask"), Rule("set_robust_list"), Rule("rseq"), Rule("futex"), Rule("gettid"), Rule("exit"),
        Rule("rt_sigaction", .unlessArgument(0, equals: 31)),  // any signal but SIGSYS
    ]

    /// This policy with more calls allowed.
    public func allowing(_ extra: Rule...) -> SandboxPolicy {
        SandboxPolicy(rules: rules + extra)
    }

    /// This policy also letting the device `print` to standard output (which needs `fstat` of
    /// it once, and `ioctl` when it is a terminal).
    public var allowingStandardOutput: SandboxPolicy {
        var policy = self
        policy.rules = policy.rules.map { rule in
            guard rule.systemCall == "write", case .onFileDescriptors(var roles) = rule.condition else { return rule }
            roles.insert(.standardOutput)
            return Rule("write", .onFileDescriptors(roles))
        }
        policy.rules += [Rule("newfstatat"), Rule("fstat"), Rule("ioctl", .onFileDescriptors([.standardOutput]))]
        return policy
    }

    public var description: String {
        "SandboxPolicy(default: kill and report; allow: " + rules.map(\.description).joined(separator: ", ") + ")"
    }
}
