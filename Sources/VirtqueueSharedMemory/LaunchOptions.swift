public import SystemPackage
public import Virtqueue

/// How ``SharedMemoryBackend`` starts a device process.
///
/// Every field has a default; new fields will too, so code that sets a few fields keeps
/// compiling.
public struct LaunchOptions: Sendable {
    /// The executable to start in the device role; `nil` for this process's own executable
    /// (`/proc/self/exe`), the component-host pattern. It must call
    /// `DeviceHost.runIfDeviceRole(devices:confinement:arguments:)` first thing in `main`.
    public var executable: FilePath?
    /// Arguments appended after the device-role arguments; the child sees them in
    /// ``DeviceHost/Context/arguments`` (a confinement step can read its settings there).
    public var arguments: [String]
    /// The child's environment; `nil` to inherit this process's.
    public var environment: [String: String]?
    /// The queue of the region the device serves, when ``queues`` is `nil`.
    public var queueIndex: Int
    /// The queues of the region the device serves, each on a thread of its own with a notifier
    /// pair of its own; `nil` for the one queue ``queueIndex``. A sandboxed device that serves
    /// several queues runs under its policy with threads allowed (`SandboxPolicy.allowingThreads`).
    public var queues: [Int]?
    /// How long the device polls before sleeping; see `DeviceQueue/waitForRequests(spins:)`.
    public var spins: Int
    /// How long ``DeviceProcess/stop()`` waits, by default, for the device to exit
    /// after hanging up before it kills it.
    public var stopGracePeriod: Duration
    /// How long the launcher waits for the child to confirm its set-up before it kills the child
    /// and fails: for the report that its device started (and, on the sandboxed level, before
    /// that for its confinement report).
    public var startupTimeout: Duration
    /// A name for the region file (shown in `/proc/PID/fd`); `nil` for `virtqueue-DEVICE`.
    public var regionName: String?
    /// Handed to `DeviceComponent/init(configuration:)` in the child. Its file
    /// descriptors are numbered as in this process (at most 12); the child inherits them as 7,
    /// 8, … and its configuration lists those numbers.
    public var configuration: DeviceConfiguration

    /// The queues the device serves: ``queues``, or ``queueIndex`` alone.
    public var servedQueues: [Int] { queues ?? [queueIndex] }

    /// The defaults: this executable, no extra arguments, inherited environment, queue 0.
    public init() {
        executable = nil
        arguments = []
        environment = nil
        queueIndex = 0
        queues = nil
        spins = 256
        stopGracePeriod = .seconds(5)
        startupTimeout = .seconds(10)
        regionName = nil
        configuration = DeviceConfiguration()
    }
}
