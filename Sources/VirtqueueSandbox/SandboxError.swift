import Glibc
public import VirtqueueSharedMemory

/// An error from the sandboxed isolation level: a device that did not prove it is confined, a
/// policy that cannot be loaded, a child that cannot be started, or a restart the policy forbids.
///
/// How a sandboxed device ended — a forbidden system call among others — is not an error of
/// this type but a `DeviceTermination`, in the `DeviceFailure` that `SandboxedDevice/failure()`
/// returns, as at every isolation level.
public struct SandboxError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let rawValue: UInt8

        /// The policy is malformed or could not be loaded.
        public static let invalidPolicy = Code(rawValue: 3)
        /// The restart policy allows no further relaunch.
        public static let restartLimitReached = Code(rawValue: 4)
        /// A system call in the launcher or the confinement step failed.
        public static let systemCallFailed = Code(rawValue: 5)
        /// The child did not prove it runs under the policy the launcher sent: no confinement
        /// report in time, a malformed one, another policy's digest, or a seccomp mode other than
        /// filter. The launcher killed and reaped it; ``SandboxError/confinementFailure`` says
        /// which.
        public static let notConfined = Code(rawValue: 6)

        public var description: String {
            switch self {
            case .invalidPolicy: "invalidPolicy"
            case .restartLimitReached: "restartLimitReached"
            case .notConfined: "notConfined"
            default: "systemCallFailed"
            }
        }
    }

    /// The code.
    public var code: Code
    /// A human-readable account naming the device and what it did.
    public var message: String
    /// How the device process ended, when it did.
    public var exitStatus: ExitStatus?
    /// The device's name.
    public var deviceName: String?
    /// For ``Code-swift.struct/notConfined``: what was wrong with the child's confinement report.
    public var confinementFailure: ConfinementFailure?
    /// The device process's id, when the error is about one.
    public var processID: Int32?

    /// Creates an error.
    public init(
        _ code: Code,
        _ message: String,
        exitStatus: ExitStatus? = nil,
        deviceName: String? = nil,
        confinementFailure: ConfinementFailure? = nil,
        processID: Int32? = nil
    ) {
        self.code = code
        self.message = message
        self.exitStatus = exitStatus
        self.deviceName = deviceName
        self.confinementFailure = confinementFailure
        self.processID = processID
    }

    static func system(_ step: String) -> SandboxError {
        SandboxError(.systemCallFailed, "\(step) failed: \(String(cString: strerror(errno)))")
    }

    public var description: String { "SandboxError.\(code): \(message)" }
}
