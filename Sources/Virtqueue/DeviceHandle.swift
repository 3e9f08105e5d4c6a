/// The driver's handle to a launched device: one shape at every isolation level.
///
/// Each backend's launcher returns one — `HeapBackend.launch` (the device on a thread),
/// `SharedMemoryBackend.launch` (in a child process), `SandboxBackend.launch` (in a
/// seccomp-confined child) — so the code that drives a device, stops it and says how it ended
/// is written once, and only the choice of launcher depends on the isolation level:
///
/// ```swift
/// func exchange(with device: some DeviceHandle) throws {
///     var driver = try device.makeDriverQueue()
///     do {
///         // … submit, notify, wait, take used …
///     } catch {
///         throw device.explain(error)   // a peerDied becomes which device died, and why
///     }
///     device.stop()                       // .finished: it served until the driver hung up
///     if let failure = device.failure() { throw failure }
/// }
/// ```
///
/// The driver's end is the region the device serves (``makeRegion()``) and the driver's
/// ``notifier``; ``makeDriverQueue(bufferSize:poolRange:indirectThreshold:)`` builds a queue on
/// both. ``stop()`` ends the device and says how it ended, as a ``DeviceTermination``;
/// ``failure()`` says why a device that has ended did not finish, as a ``DeviceFailure`` naming
/// it; ``explain(_:)`` turns an error from the driver's queue — `peerDied` above all — into
/// that failure.
public protocol DeviceHandle: AnyObject, Sendable {
    /// The region the device serves, as the driver maps it.
    associatedtype Region: MemoryRegion
    /// The driver's end of the notifier pair.
    associatedtype DriverNotifier: Notifier

    /// The device's ``DeviceComponent/name``.
    var deviceName: String { get }

    /// Where the device runs: on a thread, or in a (sandboxed) process and which.
    var location: DeviceLocation { get }

    /// The queue of the region the device serves; for a device that serves several, the first
    /// of ``queueIndices``.
    var queueIndex: Int { get }

    /// The queues of the region the device serves, in the order its launcher was given them,
    /// each on a thread of its own; `[queueIndex]` (the default) for a device that serves one.
    var queueIndices: [Int] { get }

    /// The driver's notifier of queue `index`, or `nil` if the device does not serve it. The
    /// default answers ``notifier`` for ``queueIndex``.
    func notifier(forQueue index: Int) -> DriverNotifier?

    /// The driver's notifier: kicks the device, waits for it, and reports its death
    /// (``VirtqueueError/Code-swift.struct/peerDied``).
    var notifier: DriverNotifier { get }

    /// The region the device serves, for the driver's queue: the same memory on a thread, a new
    /// mapping of it for a process.
    ///
    /// - Throws: The backend's error if the region cannot be mapped.
    func makeRegion() throws -> Region

    /// Ends the device and says how it ended. Calling it again returns the same termination.
    ///
    /// The driver's end is closed (hung up), so a device that is serving returns from its loop
    /// and ends with ``DeviceTermination/finished``; a process that does not end within its
    /// grace period is killed. A device that ended before — it threw, was killed, or made a
    /// forbidden system call — ends with that.
    @discardableResult
    func stop() -> DeviceTermination

    /// Why the device died, if it has: a ``DeviceFailure`` naming the device and the cause.
    ///
    /// `nil` while the device runs and when it finished serving. It does not wait for a device
    /// that runs; a device whose death the driver saw (its queue reported
    /// ``VirtqueueError/Code-swift.struct/peerDied``) has ended, or is ending and is waited for.
    func failure() -> DeviceFailure?
}

extension DeviceHandle {
    public var queueIndices: [Int] { [queueIndex] }

    public func notifier(forQueue index: Int) -> DriverNotifier? {
        index == queueIndex ? notifier : nil
    }

    /// Builds the driver's queue on the device's region and notifier, for the queue the device
    /// serves (the first, ``queueIndex``, when it serves several).
    ///
    /// - Parameters:
    ///   - bufferSize: The size of each pool buffer; see `DriverQueue/init(region:notifier:queueIndex:bufferSize:poolRange:indirectThreshold:)`.
    ///   - poolRange: The part of the data area the pool takes; `nil` for all of it.
    ///   - indirectThreshold: Chains longer than this use an indirect table.
    /// - Returns: The driver's queue.
    /// - Throws: The backend's error if the region cannot be mapped, or a ``VirtqueueError`` if
    ///   the queue cannot be built on it.
    public func makeDriverQueue(
        bufferSize: Int = 4096,
        poolRange: Range<Int>? = nil,
        indirectThreshold: Int = 16
    ) throws -> DriverQueue<Region, DriverNotifier> {
        try makeDriverQueue(
            queue: queueIndex,
            bufferSize: bufferSize,
            poolRange: poolRange,
            indirectThreshold: indirectThreshold
        )
    }

    /// Builds the driver's queue for queue `index` of the region, one of the device's
    /// ``queueIndices``, on that queue's notifier.
    ///
    /// Each queue's pool must be a part of the data area no other queue's pool overlaps. With
    /// `poolRange` `nil`, a device that serves one queue gives it the whole data area, and a
    /// device that serves several gives the queue at position *k* of ``queueIndices`` share *k*
    /// of the data area cut in as many equal shares (``RegionLayout/dataAreaShare(_:of:)``).
    ///
    /// ```swift
    /// let device = try HeapBackend.launch(Echo.self, layout: layout, queues: [0, 1])
    /// var first = try device.makeDriverQueue(queue: 0)    // its own notifier and pool
    /// var second = try device.makeDriverQueue(queue: 1)   // drive each on a thread of its own
    /// ```
    ///
    /// - Parameters:
    ///   - index: The queue, as the region numbers it.
    ///   - bufferSize: The size of each pool buffer.
    ///   - poolRange: The part of the data area the pool takes, relative to its start; `nil`
    ///     for the queue's share.
    ///   - indirectThreshold: Chains longer than this use an indirect table.
    /// - Returns: The driver's queue.
    /// - Throws: ``VirtqueueError/Code-swift.struct/invalidConfiguration`` if the device does not
    ///   serve queue `index`; the backend's error if the region cannot be mapped; a
    ///   ``VirtqueueError`` if the queue cannot be built on it.
    public func makeDriverQueue(
        queue index: Int,
        bufferSize: Int = 4096,
        poolRange: Range<Int>? = nil,
        indirectThreshold: Int = 16
    ) throws -> DriverQueue<Region, DriverNotifier> {
        let served = queueIndices
        guard let position = served.firstIndex(of: index), let notifier = notifier(forQueue: index) else {
            throw VirtqueueError(
                .invalidConfiguration,
                "device \(deviceName) does not serve queue \(index); it serves \(served.map(String.init).joined(separator: ", "))"
            )
        }
        let region = try makeRegion()
        var pool = poolRange
        if pool == nil, served.count > 1 {
            pool = try RegionLayout.of(region).dataAreaShare(position, of: served.count)
        }
        return try DriverQueue(
            region: region,
            notifier: notifier,
            queueIndex: index,
            bufferSize: bufferSize,
            poolRange: pool,
            indirectThreshold: indirectThreshold
        )
    }

    /// The error to report for `error`, which driving this device threw: the device's
    /// ``failure()`` when it has died — which device, where, and why: the error it threw, its
    /// exit status, the signal that killed it, or the forbidden system call its sandbox caught —
    /// and `error` itself while the device runs or when it finished.
    ///
    /// One call at every isolation level turns the driver's
    /// ``VirtqueueError/Code-swift.struct/peerDied`` into its cause:
    ///
    /// ```swift
    /// do {
    ///     try driver.waitForUsed()
    /// } catch {
    ///     throw device.explain(error)   // "sandboxed device echo (pid 4242) attempted the
    /// }                                 //  forbidden system call newfstatat (#262)"
    /// ```
    ///
    /// - Parameter error: What a call on the driver's queue (or code around it) threw.
    /// - Returns: A ``DeviceFailure``, or `error`.
    public func explain(_ error: any Error) -> any Error {
        if error is DeviceFailure { return error }
        return failure() ?? error
    }
}

/// Where a launched device runs.
public enum DeviceLocation: Hashable, Sendable, CustomStringConvertible {
    /// On a thread of the driver's process (the heap level).
    case thread
    /// In a child process (the shared-memory level).
    case process(id: Int32)
    /// In a seccomp-confined child process (the sandboxed level).
    case sandboxedProcess(id: Int32)

    /// The device's process id; `nil` on a thread.
    public var processID: Int32? {
        switch self {
        case .thread: nil
        case .process(let id), .sandboxedProcess(let id): id
        }
    }

    public var description: String {
        switch self {
        case .thread: "on a thread"
        case .process(let id): "in process \(id)"
        case .sandboxedProcess(let id): "in sandboxed process \(id)"
        }
    }
}

/// How a launched device ended: the same account at every isolation level.
///
/// A device on a thread ends ``finished``, ``failedToStart(_:)`` or ``threw(_:)``; a device in a
/// process can also be ended by a signal or exit on its own; a sandboxed device can also be
/// killed by its filter for a system call its policy forbids.
public enum DeviceTermination: Hashable, Sendable, CustomStringConvertible {
    /// It served until its driver hung up, and returned: a clean end.
    case finished
    /// It never served: attaching its queue failed or its factory
    /// (``DeviceComponent/init(configuration:)``) threw. The error, as the device described it.
    case failedToStart(String)
    /// Serving ended with an error: the device's ``DeviceComponent/handle(_:on:)`` threw, or the
    /// driver broke a ring rule. The error, as the device described it.
    case threw(String)
    /// Its process exited with this code without saying why (the device host's codes are listed
    /// under `DeviceHost.ExitCode`).
    case exited(Int32)
    /// A signal killed its process: `SIGKILL` (9) from a launcher that stopped waiting, or from
    /// anyone else; `SIGSEGV` (11), `SIGBUS` (7), `SIGSYS` (31) without a record of the call, ….
    case signaled(Int32)
    /// Its sandbox killed it for a system call its policy forbids: the call's name for the
    /// architecture it was made on (`"openat"`, `"newfstatat"`), and its number.
    case forbiddenSystemCall(name: String, number: Int32)
    /// It ended, but how could not be learned (its process could not be waited for: someone
    /// else reaped it). Why not.
    case unknown(String)

    /// Whether the device served until its driver hung up.
    public var isFinished: Bool { self == .finished }

    public var description: String {
        switch self {
        case .finished: "served until its driver hung up"
        case .failedToStart(let error): "failed to start: \(error)"
        case .threw(let error): "threw: \(error)"
        case .exited(let code): "exited with code \(code)"
        case .signaled(let signal): "was killed by signal \(signal)\(Self.signalName(signal).map { " (\($0))" } ?? "")"
        case .forbiddenSystemCall(let name, let number):
            "attempted the forbidden system call \(name) (#\(number))"
        case .unknown(let reason): "ended, but how is unknown: \(reason)"
        }
    }

    /// The name of a Linux signal number, for messages.
    static func signalName(_ signal: Int32) -> String? {
        let names = [
            "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL",
            "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT",
            "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF",
            "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
        ]
        guard signal >= 1, Int(signal) <= names.count else { return nil }
        return names[Int(signal) - 1]
    }
}

/// A launched device that died, or never started: which device, where it ran, and why.
///
/// Launchers throw it when a device cannot start (its factory threw on its configuration, its
/// host does not know it), ``DeviceHandle/failure()`` returns it once a device has died, and
/// ``DeviceHandle/explain(_:)`` turns a driver's `peerDied` into it. Its description reads as
/// a sentence:
///
/// ```
/// sandboxed device echo (pid 4242) attempted the forbidden system call newfstatat (#262)
/// device virtio-blk (thread) failed to start: the block device needs sectors=N
/// ```
public struct DeviceFailure: Error, Sendable, CustomStringConvertible {
    /// The device's ``DeviceComponent/name``.
    public var deviceName: String
    /// Where it ran.
    public var location: DeviceLocation
    /// How it ended; never ``DeviceTermination/finished``.
    public var termination: DeviceTermination
    /// The error the device threw, when it ran in this process (on a thread); a device in
    /// another process reports only its description, in ``termination``.
    public var underlyingError: (any Error)?

    /// Creates a failure.
    ///
    /// - Parameters:
    ///   - deviceName: The device's name.
    ///   - location: Where it ran.
    ///   - termination: How it ended.
    ///   - underlyingError: The error it threw, if it is at hand.
    public init(
        deviceName: String,
        location: DeviceLocation,
        termination: DeviceTermination,
        underlyingError: (any Error)? = nil
    ) {
        self.deviceName = deviceName
        self.location = location
        self.termination = termination
        self.underlyingError = underlyingError
    }

    /// The device, named as the description names it: `device echo (thread)`, `device echo
    /// (pid 4242)`, `sandboxed device echo (pid 4242)`.
    public var component: String {
        switch location {
        case .thread: "device \(deviceName) (thread)"
        case .process(let id): "device \(deviceName) (pid \(id))"
        case .sandboxedProcess(let id): "sandboxed device \(deviceName) (pid \(id))"
        }
    }

    public var description: String { "\(component) \(termination)" }
}
