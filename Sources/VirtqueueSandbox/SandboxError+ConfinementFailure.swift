extension SandboxError {
    /// Why the launcher counted a sandboxed child as not confined
    /// (``SandboxError/Code-swift.struct/notConfined``).
    public struct ConfinementFailure: Hashable, Sendable, CustomStringConvertible {
        let rawValue: UInt8

        /// The child sent no confinement report within `LaunchOptions/startupTimeout` and was
        /// still running: a host that skipped the confinement, or one that hangs.
        public static let noReport = ConfinementFailure(rawValue: 1)
        /// The child ended (or closed its liveness socket) before it reported.
        public static let endedBeforeReport = ConfinementFailure(rawValue: 2)
        /// The child sent something that is not a well-formed confinement report.
        public static let malformedReport = ConfinementFailure(rawValue: 3)
        /// The child loaded a policy other than the one the launcher sent: the digests differ.
        public static let policyMismatch = ConfinementFailure(rawValue: 4)
        /// The seccomp mode, as the child's `prctl(PR_GET_SECCOMP)` or the kernel's
        /// `/proc/PID/status` reports it, is not 2 (filter).
        public static let notFiltered = ConfinementFailure(rawValue: 5)

        public var description: String {
            switch self {
            case .noReport: "noReport"
            case .endedBeforeReport: "endedBeforeReport"
            case .malformedReport: "malformedReport"
            case .policyMismatch: "policyMismatch"
            default: "notFiltered"
            }
        }
    }
}
