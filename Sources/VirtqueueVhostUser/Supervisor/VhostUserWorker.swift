import Glibc
import SystemPackage
import Virtqueue
import VirtqueueSandbox

/// The worker half of a supervised vhost-user back-end: the process that maps guest memory and
/// serves the rings of one connection.
///
/// A ``VhostUserSupervisor`` starts the same executable once per connection with
/// ``argument`` and the descriptors it hands over; the executable's `main` calls
/// ``runIfWorkerRole(_:arguments:options:log:)`` first, which serves the connection and exits —
/// or returns at once when the process is not a worker.
///
/// Descriptors the worker is started with: 3, the connection; 4, the report socket (the
/// confinement report, and the SIGSYS reporter's record); 5…, the device's descriptors
/// (``Virtqueue/DeviceConfiguration/fileDescriptors``).
public enum VhostUserWorker {
    /// The argument that puts the executable in the worker role.
    public static let argument = "--vhost-user-worker"

    /// Exit codes of a worker.
    public enum ExitCode {
        /// The front-end hung up: a normal end.
        public static let done: Int32 = 0
        /// The back-end closed the connection (a framing violation, a ring that did not stop).
        public static let connectionFailed: Int32 = 3
        /// The arguments or descriptors were not a worker's.
        public static let badInvocation: Int32 = 4
        /// The confinement could not be applied.
        public static let confinementFailed: Int32 = 5
        /// The device or back-end could not be created.
        public static let deviceFailed: Int32 = 6
    }

    static let connectionDescriptor: CInt = 3
    static let reportDescriptor: CInt = 4
    static let firstDeviceDescriptor: CInt = 5

    /// Serves the connection and exits if this process was started as a worker; returns
    /// otherwise.
    ///
    /// Worker arguments, after ``argument``: the number of device descriptors, the sandbox
    /// policy's encoding (or `-` for none), then the device's arguments.
    ///
    /// - Parameters:
    ///   - device: The device type to serve.
    ///   - arguments: The process's arguments (`CommandLine.arguments`).
    ///   - options: The back-end's bounds and timeouts.
    ///   - log: Where the back-end's log records go (the worker's standard error is the
    ///     supervisor's).
    public static func runIfWorkerRole<Device: VhostUserDevice>(
        _ device: Device.Type,
        arguments: [String] = CommandLine.arguments,
        options: VhostUserBackendOptions = VhostUserBackendOptions(),
        log: @escaping VhostUserLogSink
    ) {
        guard let index = arguments.firstIndex(of: argument) else { return }
        let rest = Array(arguments[(index + 1)...])
        guard rest.count >= 2, let deviceCount = Int(rest[0]), (0...16).contains(deviceCount) else {
            log(VhostUserLogRecord(level: .error, "worker: malformed arguments \(rest)"))
            exit(ExitCode.badInvocation)
        }
        let devices = (0..<CInt(deviceCount)).map { firstDeviceDescriptor + $0 }
        let configuration = DeviceConfiguration(arguments: Array(rest.dropFirst(2)), fileDescriptors: devices)
        if rest[1] != "-" {
            guard let policy = SandboxPolicy(argumentEncoding: rest[1]) else {
                log(VhostUserLogRecord(level: .error, "worker: the sandbox policy argument is malformed"))
                exit(ExitCode.badInvocation)
            }
            var roles: [SandboxPolicy.FileDescriptorRole: Int32] = [
                .liveness: connectionDescriptor, .report: reportDescriptor, .standardOutput: 1, .standardError: 2,
            ]
            for (index, descriptor) in devices.enumerated() { roles[.device(index)] = descriptor }
            do {
                try policy.confineThisProcess(
                    keeping: [1, 2, connectionDescriptor, reportDescriptor] + devices,
                    roles: roles,
                    openFileLimit: 1024,
                    allowingThreads: true
                )
            } catch {
                log(VhostUserLogRecord(level: .error, "worker: could not confine itself: \(error)"))
                exit(ExitCode.confinementFailed)
            }
        }
        let backend: VhostUserBackend<Device>
        let socket: VhostUserSocket
        do {
            backend = try VhostUserBackend<Device>(configuration: configuration, options: options, log: log)
            socket = try VhostUserSocket(adopting: FileDescriptor(rawValue: connectionDescriptor))
        } catch {
            log(VhostUserLogRecord(level: .error, "worker: \(Device.name) could not be served: \(error)"))
            exit(ExitCode.deviceFailed)
        }
        do {
            try backend.serve(connection: socket)
        } catch {
            exit(ExitCode.connectionFailed)
        }
        exit(ExitCode.done)
    }
}
