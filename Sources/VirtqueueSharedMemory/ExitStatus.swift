import CVirtqueueSystem

/// How a device process ended.
public enum ExitStatus: Hashable, Sendable, CustomStringConvertible {
    /// It called `exit` with this code.
    case exited(Int32)
    /// A signal killed it: `SIGKILL` (9) from ``DeviceProcess/kill(signal:)``, `SIGSYS` (31)
    /// from a seccomp filter, `SIGBUS`, `SIGSEGV`, ….
    case signaled(Int32)

    /// Whether the process exited with code 0.
    public var isSuccess: Bool { self == .exited(0) }

    /// Decodes a `waitpid(2)` status.
    init(waitStatus status: CInt) {
        if vq_wifsignaled(status) != 0 {
            self = .signaled(vq_wtermsig(status))
        } else {
            self = .exited(vq_wexitstatus(status))
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): "exited with code \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}
