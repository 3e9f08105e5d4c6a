import CVirtqueueSystem
import Glibc
import Synchronization

/// The suite's helper process (`VirtqueueConformanceHelper`), started with one ``PortableEnd``:
/// how the suite starts it, kills it and learns how it ended.
///
/// The process is killed and reaped when this object goes away, whatever the check did.
final class HelperProcess: Sendable {
    /// The executable's name, as SwiftPM builds it.
    static let executableName = "VirtqueueConformanceHelper"
    /// The environment variable that names the executable.
    static let environmentVariable = "VIRTQUEUE_CONFORMANCE_HELPER"
    /// Descriptors a ``PortableEnd`` may have: `vq_spawn` passes 16, one is the helper's
    /// standard error.
    static let maximumDescriptors = 15

    let pid: pid_t
    let role: QueueSide
    private let errorOutput: CInt
    private let termination = Mutex<Termination?>(nil)

    /// How the helper ended.
    enum Termination: Hashable, Sendable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)
        /// Someone else in this process reaped it first.
        case unknown

        var wasKilled: Bool { self == .signaled(SIGKILL) }

        var description: String {
            switch self {
            case .exited(let status): "exited with status \(status)"
            case .signaled(let signal) where signal == SIGKILL: "was killed by SIGKILL"
            case .signaled(let signal): "was killed by signal \(signal)"
            case .unknown: "ended (reaped elsewhere in this process)"
            }
        }
    }

    private init(pid: pid_t, role: QueueSide, errorOutput: CInt) {
        self.pid = pid
        self.role = role
        self.errorOutput = errorOutput
    }

    deinit {
        if termination.withLock({ $0 == nil }) {
            _ = Glibc.kill(pid, SIGKILL)
            var status: CInt = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        _ = close(errorOutput)
    }

    /// Where the helper executable is: `configured`, else the environment variable, else beside
    /// the running executable.
    ///
    /// - Throws: ``CheckFailure`` naming every place looked at and how to build the helper.
    static func locate(_ configured: String?) throws(CheckFailure) -> String {
        if let configured {
            guard access(configured, X_OK) == 0 else {
                throw CheckFailure(
                    "the helper executable configured (Configuration.helperExecutable) at \(configured) is not an executable file: errno \(errno)"
                )
            }
            return configured
        }
        if let variable = getenv(environmentVariable) {
            let path = String(cString: variable)
            guard access(path, X_OK) == 0 else {
                throw CheckFailure("\(environmentVariable)=\(path) is not an executable file: errno \(errno)")
            }
            return path
        }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, Int(PATH_MAX))
        let running = String(decoding: buffer.prefix(max(count, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let directory = running.split(separator: "/", omittingEmptySubsequences: false).dropLast()
            .joined(separator: "/")
        let path = "\(directory)/\(executableName)"
        guard access(path, X_OK) == 0 else {
            throw CheckFailure(
                "the helper executable \(executableName) is not beside the running executable (looked for \(path)): add the product \(executableName) of swift-virtqueue to the test target's dependencies (or `swift build --product \(executableName)`), or name it with ConformanceSuite.Configuration.helperExecutable or \(environmentVariable)"
            )
        }
        return path
    }

    /// Starts the helper as `role` on `end`, and closes this process's copies of `end`'s
    /// descriptors: the helper then holds the only ones.
    ///
    /// - Throws: ``CheckFailure`` naming a descriptor that is not open, a malformed end, or the
    ///   system call that failed.
    static func spawn(
        executable: String,
        role: QueueSide,
        end: consuming PortableEnd,
        bufferSize: Int
    ) throws(CheckFailure) -> HelperProcess {
        let sources = end.descriptors
        guard !end.mappings.isEmpty else { throw CheckFailure("the portable end has no mappings") }
        guard sources.count <= maximumDescriptors else {
            throw CheckFailure(
                "the portable end has \(sources.count) descriptors; the helper takes at most \(maximumDescriptors)"
            )
        }
        guard (1...64).contains(end.notifier.kickMessage.count) else {
            throw CheckFailure(
                "the portable end's kick message has \(end.notifier.kickMessage.count) bytes; 1 to 64 are allowed"
            )
        }
        for descriptor in sources {
            guard descriptor >= 0, fcntl(descriptor, F_SETFD, FD_CLOEXEC) == 0 else {
                throw CheckFailure("the portable end's descriptor \(descriptor) is not open (errno \(errno))")
            }
        }
        // The helper gets its standard error pipe as descriptor 3 and the end's descriptors as
        // 4, 5, … in order; vq_spawn closes everything else in the child.
        var numbers: [CInt: CInt] = [:]
        for (index, descriptor) in sources.enumerated() { numbers[descriptor] = 4 + CInt(index) }
        func number(_ descriptor: CInt) -> CInt { numbers[descriptor] ?? -1 }
        let invocation = HelperInvocation(
            role: role,
            parent: getpid(),
            bufferSize: bufferSize,
            mappings: end.mappings.map {
                PortableMapping(
                    descriptor: number($0.descriptor),
                    offset: $0.offset,
                    busAddress: $0.busAddress,
                    byteCount: $0.byteCount
                )
            },
            notifier: PortableNotifier(
                notifyDescriptor: number(end.notifier.notifyDescriptor),
                waitDescriptor: number(end.notifier.waitDescriptor),
                kickMessage: end.notifier.kickMessage
            )
        )

        var pipe: [CInt] = [-1, -1]
        guard Glibc.pipe(&pipe) == 0 else { throw CheckFailure("pipe failed: errno \(errno)") }
        _ = fcntl(pipe[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipe[1], F_SETFD, FD_CLOEXEC)
        defer { _ = close(pipe[1]) }
        let inherited = [pipe[1]] + sources
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + invocation.arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var pid: pid_t = 0
        let spawned = vq_spawn(&pid, executable, argv, nil, inherited, CInt(inherited.count))
        guard spawned == 0 else {
            _ = close(pipe[0])
            throw CheckFailure(
                "starting the helper \(executable) with \(inherited.count) descriptors failed: errno \(spawned)"
            )
        }
        return HelperProcess(pid: pid, role: role, errorOutput: pipe[0])
        // `end` goes away here: this process's copies of its descriptors close.
    }

    /// Sends `SIGKILL`.
    func kill() {
        _ = Glibc.kill(pid, SIGKILL)
    }

    /// How the helper ended, or `nil` while it runs (`wait` false) — waiting for it otherwise.
    @discardableResult
    func termination(wait: Bool) -> Termination? {
        termination.withLock { known in
            if let known { return known }
            var status: CInt = 0
            var result: pid_t
            repeat {
                result = waitpid(pid, &status, wait ? 0 : WNOHANG)
            } while result < 0 && errno == EINTR
            if result == 0 { return nil }
            let ended: Termination
            if result < 0 {
                ended = .unknown
            } else if status & 0x7f == 0 {
                ended = .exited((status >> 8) & 0xff)
            } else {
                ended = .signaled(status & 0x7f)
            }
            known = ended
            return ended
        }
    }

    /// What the helper wrote to standard error so far (after it ended: everything), trimmed.
    func errorText() -> String {
        var text: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while text.count < 16384 {
            var entry = pollfd(fd: errorOutput, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 0) > 0 else { break }
            let count = buffer.withUnsafeMutableBytes { read(errorOutput, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            text += buffer.prefix(count)
        }
        let string = String(decoding: text, as: UTF8.self)
        return string.split(separator: "\n").joined(separator: " / ")
    }

    /// The helper's state and what it said, for a failure message.
    func account() -> String {
        let state = termination(wait: false).map { "\($0)" } ?? "is still running"
        let said = errorText()
        return "the helper (pid \(pid), the \(role)) \(state)" + (said.isEmpty ? "" : "; it said: \(said)")
    }
}
