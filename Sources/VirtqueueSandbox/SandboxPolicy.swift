/// The system calls a sandboxed device may make: a seccomp allow-list with argument conditions.
///
/// Everything not on the list kills the device: the call traps, a tiny signal handler records
/// which call it was for the supervisor, and the process exits. The default,
/// ``deviceLoop``, is the measured minimum for a device serving a virtqueue over eventfds
/// (see `docs/sandbox.md` for how it was measured and how to measure your own device).
///
/// File descriptors are named by role, not number: the launcher resolves them to the numbers
/// the child actually holds, so `read` is allowed on the kick eventfd only and `write` on the
/// call eventfd and the report pipe only.
public struct SandboxPolicy: Hashable, Sendable, CustomStringConvertible {
    /// A file descriptor the child holds, by role.
    public enum FileDescriptorRole: Hashable, Sendable, CustomStringConvertible {
        /// The eventfd the driver kicks; the device reads it.
        case kick
        /// The eventfd the device signals; the device writes it.
        case call
        /// The descriptor whose hang-up tells the device the driver has gone; polled only.
        case liveness
        /// The pipe the SIGSYS reporter writes a violation record to.
        case report
        /// The child's standard error (for devices that log).
        case standardError

        public var description: String {
            switch self {
            case .kick: "kick"
            case .call: "call"
            case .liveness: "liveness"
            case .report: "report"
            case .standardError: "stderr"
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
            }
        }
    }

    /// The allowed calls; anything else kills the device.
    public var rules: [Rule]

    /// Creates a policy from its rules.
    public init(rules: [Rule]) {
        self.rules = rules
    }

    /// The measured minimum for a device serving a queue: read the kick eventfd, write the call
    /// eventfd, poll the kick and liveness descriptors while idle, manage heap memory without
    /// ever making it executable, and exit.
    ///
    /// Measured with `strace -f` and with a default action of `SCMP_ACT_LOG` on the device
    /// loop of this package (docs/sandbox.md has the commands and the trace).
    public static let deviceLoop = SandboxPolicy(rules: [
        Rule("read", .onFileDescriptors([.kick])),
        Rule("write", .onFileDescriptors([.call, .report])),
        Rule("ppoll"),
        Rule("poll"),
        Rule("futex"),
        Rule("brk"),
        Rule("mmap", .withoutExecute(argument: 2)),
        Rule("munmap"),
        Rule("mprotect", .withoutExecute(argument: 2)),
        Rule("madvise"),
        Rule("rt_sigreturn"),
        Rule("exit"),
        Rule("exit_group"),
    ])

    /// This policy with more calls allowed.
    public func allowing(_ extra: Rule...) -> SandboxPolicy {
        SandboxPolicy(rules: rules + extra)
    }

    /// This policy also letting the device write to standard error and query it (for logging).
    public var allowingLogging: SandboxPolicy {
        var policy = self
        policy.rules = policy.rules.map { rule in
            guard rule.systemCall == "write", case .onFileDescriptors(var roles) = rule.condition else { return rule }
            roles.insert(.standardError)
            return Rule("write", .onFileDescriptors(roles))
        }
        policy.rules.append(Rule("newfstatat"))
        policy.rules.append(Rule("fstat"))
        return policy
    }

    public var description: String {
        "SandboxPolicy(default: kill and report; allow: " + rules.map(\.description).joined(separator: ", ") + ")"
    }
}
