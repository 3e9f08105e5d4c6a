import CVirtqueueSandbox
import Glibc
public import Virtqueue
public import VirtqueueSharedMemory

/// How often a sandboxed device may be started again after it fails.
public enum RestartPolicy: Hashable, Sendable {
    /// Never: a failed device stays down.
    case never
    /// After a failure, up to `maximumRestarts` times in all.
    case onFailure(maximumRestarts: Int)
}

/// The sandboxed isolation level: the device runs in a child process, as on the shared-memory
/// level, and confines itself with a seccomp filter before it touches ring memory — the
/// stand-in for an isolated seL4 component, which can compute on its shared memory and signal
/// its notification objects and do nothing else.
///
/// The device host's `main` must pass ``SandboxConfinement`` to
/// `DeviceHost/runIfDeviceRole(devices:confinement:arguments:)`. That is not taken on trust: the
/// launcher waits for the child's confinement report and fails with
/// ``SandboxError/Code-swift.struct/notConfined`` if the child did not confine itself with the
/// policy it was sent.
///
/// ```swift
/// DeviceHost.runIfDeviceRole(devices: [DeviceHost.Entry(Uppercase.self)], confinement: SandboxConfinement())
/// let device = try SandboxBackend.launch(Uppercase.self, layout: layout)
/// var driver = try device.makeDriverQueue()
/// … the same driver code as at every other level …
/// ```
///
/// If the device breaks its policy, the filter kills it; the driver's wait ends with
/// `VirtqueueError/Code/peerDied`, `explain(_:)` (or ``SandboxedDevice/failure()``) turns
/// that into a `DeviceFailure` naming the forbidden call
/// (`DeviceTermination/forbiddenSystemCall(name:number:)`), and
/// ``SandboxedDevice/relaunch(configuration:)`` starts a fresh device.
public enum SandboxBackend {
    /// Starts `Device` in a sandboxed child process serving a new region for `layout`.
    ///
    /// The child gets an empty environment, works in `/`, has its descriptor and process limits
    /// lowered and holds only its notification sockets, its liveness socket and the descriptors in
    /// `options.configuration`, then loads `policy`.
    ///
    /// The device is handed out only once the child has proved it is confined: within
    /// `LaunchOptions/startupTimeout` it must report, on its liveness socket and from under the
    /// loaded filter, the ``SandboxPolicy/digest`` of `policy` and the seccomp mode 2 (filter),
    /// and the kernel's `/proc/PID/status` must agree. Otherwise the child is killed and reaped,
    /// and `launch` throws — a host that skips ``SandboxConfinement`` cannot be launched. Then,
    /// as on the shared-memory level, the child must report that its device started: a
    /// configuration the device refuses fails the launch here.
    ///
    /// - Parameters:
    ///   - device: The device type; the child looks it up by its `DeviceComponent/name`.
    ///   - layout: The region's layout.
    ///   - policy: The system calls the device may make; ``SandboxPolicy/deviceLoop`` by default.
    ///   - restart: How often ``SandboxedDevice/relaunch(configuration:)`` may start it again.
    ///   - options: The executable, configuration and other settings, as on the shared-memory level.
    /// - Returns: The driver's handle to the running, confined device.
    /// - Throws: ``SandboxError``: ``SandboxError/Code-swift.struct/notConfined`` if the child
    ///   did not prove it is confined by `policy`, ``SandboxError/Code-swift.struct/systemCallFailed``
    ///   if it cannot be started. `DeviceFailure` if the device did not start (its factory threw
    ///   — or made a forbidden system call); `SharedMemoryError` if it did not report its start
    ///   within the startup timeout.
    public static func launch<Device: DeviceComponent>(
        _ device: Device.Type,
        layout: RegionLayout,
        policy: SandboxPolicy = .deviceLoop,
        restart: RestartPolicy = .never,
        options: LaunchOptions = LaunchOptions()
    ) throws -> SandboxedDevice {
        try SandboxedDevice.start(
            Device.self,
            layout: layout,
            policy: policy,
            restart: restart,
            options: options,
            restartCount: 0
        )
    }
}

/// A device running in a sandboxed child process: the driver's handle to it.
///
/// A `DeviceHandle` like the other levels' handles; its ``failure()`` and ``stop()`` also name
/// the system call the filter killed it for, and ``relaunch(configuration:)`` starts it again as
/// the ``RestartPolicy`` allows.
public final class SandboxedDevice: DeviceHandle {
    /// The child process.
    public let process: DeviceProcess
    /// The policy the child runs under: the one it was launched with, with threads allowed
    /// (``SandboxPolicy/allowingThreads``) when it serves several queues.
    public let policy: SandboxPolicy
    /// The restart policy.
    public let restartPolicy: RestartPolicy
    /// How many times this device has been started again before this instance.
    public let restartCount: Int
    let layout: RegionLayout
    let options: LaunchOptions
    let starter: @Sendable (SandboxPolicy, RestartPolicy, LaunchOptions, Int) throws -> SandboxedDevice

    init(
        process: DeviceProcess,
        policy: SandboxPolicy,
        restartPolicy: RestartPolicy,
        restartCount: Int,
        layout: RegionLayout,
        options: LaunchOptions,
        starter: @escaping @Sendable (SandboxPolicy, RestartPolicy, LaunchOptions, Int) throws -> SandboxedDevice
    ) {
        self.process = process
        self.policy = policy
        self.restartPolicy = restartPolicy
        self.restartCount = restartCount
        self.layout = layout
        self.options = options
        self.starter = starter
    }

    static func start<Device: DeviceComponent>(
        _ device: Device.Type,
        layout: RegionLayout,
        policy: SandboxPolicy,
        restart: RestartPolicy,
        options: LaunchOptions,
        restartCount: Int
    ) throws -> SandboxedDevice {
        // A device that serves several queues serves each further one on a thread of its own.
        let policy = options.servedQueues.count > 1 ? policy.allowingThreads : policy
        var childOptions = options
        childOptions.environment = [:]
        childOptions.arguments += [DeviceHost.sandboxPolicyArgument, policy.argumentEncoding]
        let process: DeviceProcess
        do {
            let file = try SharedMemoryFile.create(
                layout: layout,
                name: options.regionName ?? "virtqueue-\(Device.name)"
            )
            process = try SharedMemoryBackend.spawn(
                Device.self,
                file: file,
                options: childOptions,
                interpreter: { status, messages in termination(status: status, messages: messages) }
            )
        } catch {
            throw SandboxError(.systemCallFailed, "cannot start \(Device.name): \(error)", deviceName: Device.name)
        }
        try verifyConfinement(of: process, policy: policy, timeout: options.startupTimeout)
        try process.awaitStart(timeout: options.startupTimeout)
        return SandboxedDevice(
            process: process,
            policy: policy,
            restartPolicy: restart,
            restartCount: restartCount,
            layout: layout,
            options: options
        ) { (policy, restart, options, count) throws -> SandboxedDevice in
            try start(
                Device.self,
                layout: layout,
                policy: policy,
                restart: restart,
                options: options,
                restartCount: count
            )
        }
    }

    /// How a sandboxed child ended, where the sandbox tells more than the exit status: the
    /// SIGSYS reporter's record names the forbidden call; without one, the reporter's exit code
    /// still says the filter killed it. `nil` to leave it to the shared-memory level's reading.
    static func termination(status: ExitStatus, messages: [[UInt8]]) -> DeviceTermination? {
        guard status == .exited(VQ_SANDBOX_VIOLATION_EXIT_STATUS) else { return nil }
        for message in messages {
            if let violation = SandboxViolation(report: message) {
                return .forbiddenSystemCall(name: violation.systemCall, number: violation.number)
            }
        }
        return .signaled(SIGSYS)
    }

    /// The device's name.
    public var deviceName: String { process.deviceName }

    /// Where the device runs: `DeviceLocation/sandboxedProcess(id:)`.
    public var location: DeviceLocation { process.location }

    /// The first queue the device serves.
    public var queueIndex: Int { process.queueIndex }

    /// The queues the device serves (`LaunchOptions/queues`), each on a thread of its own.
    public var queueIndices: [Int] { process.queueIndices }

    /// The driver's notifier of the first queue: kicks the device, waits for it, and reports its death.
    public var notifier: EventNotifier { process.notifier }

    /// The driver's notifier of queue `index`, or `nil` if the device does not serve it.
    public func notifier(forQueue index: Int) -> EventNotifier? {
        process.notifier(forQueue: index)
    }

    /// Maps the region the device serves, for the driver's queue.
    ///
    /// - Throws: `SharedMemoryError` if `mmap` fails.
    public func makeRegion() throws(SharedMemoryError) -> SharedMemoryRegion {
        try process.makeRegion()
    }

    /// Stops the device (hang up, wait, kill if it does not end, reap) and says how it ended:
    /// `DeviceTermination/finished`, or what it did before —
    /// `DeviceTermination/forbiddenSystemCall(name:number:)` when its filter killed it.
    @discardableResult
    public func stop() -> DeviceTermination {
        process.stop()
    }

    /// Why the device died, if it has: a `DeviceFailure` naming the device, its process and the
    /// cause — `DeviceTermination/forbiddenSystemCall(name:number:)` with the call's name when
    /// the filter killed it. `nil` while it runs and when it served until it was stopped.
    ///
    /// Call it (or `explain(_:)`) when the driver's queue reports `VirtqueueError/Code/peerDied`.
    public func failure() -> DeviceFailure? {
        process.failure()
    }

    /// Starts the device again in a new sandboxed child with a new region, if the restart
    /// policy allows; the old child is reaped first. Build a new driver queue on the result and
    /// submit again what `DriverQueue/takeAbandoned()` returned.
    ///
    /// - Parameter configuration: The new child's configuration; `nil` for the same as before.
    /// - Throws: ``SandboxError/Code-swift.struct/restartLimitReached`` when the policy forbids
    ///   it, or what ``SandboxBackend/launch(_:layout:policy:restart:options:)`` throws.
    public func relaunch(configuration: DeviceConfiguration? = nil) throws -> SandboxedDevice {
        let allowed: Int
        switch restartPolicy {
        case .never: allowed = 0
        case .onFailure(let maximumRestarts): allowed = maximumRestarts
        }
        guard restartCount < allowed else {
            throw SandboxError(
                .restartLimitReached,
                "\(deviceName) was restarted \(restartCount) times; the restart policy allows \(allowed)",
                deviceName: deviceName
            )
        }
        process.stop(gracePeriod: .zero)
        var options = self.options
        if let configuration { options.configuration = configuration }
        return try starter(policy, restartPolicy, options, restartCount + 1)
    }
}
