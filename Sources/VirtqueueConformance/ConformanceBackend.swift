public import Virtqueue

/// A backend under test: how the conformance suite gets memory and notifiers from it.
///
/// A backend is a `GuestMemory` (usually a `MemoryRegion`, its one-mapping case) and a
/// `Notifier` — and, for backends
/// that run the device somewhere else (a thread, a child process, a sandbox), a way to start it.
/// The adapter hands the suite what it needs through three calls:
///
/// - ``withQueueEnds(layout:_:)`` (required): fresh memory and a notifier pair, seen from both
///   ends — the driver's and the device's — in this process.
/// - ``withProcessEnds(layout:keeping:_:)`` (required): one end in this process and the other as
///   file descriptors, which the suite hands to its helper process and kills with `SIGKILL`
///   (``ConformanceCheck/peerProcessDeath``) — or the reason that cannot apply to this backend.
/// - ``withLaunchedDevice(layout:_:)`` (optional): a ``ConformanceDevice`` started the way the
///   backend starts devices, and the driver's end of it.
///
/// Regions may be `~Copyable`, and each backend has its own region and notifier types, so the
/// calls take a *visitor*: the suite's generic code, which the backend calls with its concrete
/// types. An adapter is a few lines:
///
/// ```swift
/// struct FileConformanceBackend: ConformanceBackend {
///     var name: String { "file" }
///
///     func withQueueEnds<Visitor: QueueEndsVisitor>(
///         layout: RegionLayout,
///         _ visitor: Visitor
///     ) throws -> Visitor.Output {
///         let file = try RegionFile(byteCount: layout.regionSize)
///         let notifiers = try SocketNotifier.makePair()
///         return try visitor.visit(
///             QueueEnds(
///                 driver: QueueEnd(region: try file.map(), notifier: notifiers.driver, close: notifiers.driver.close),
///                 device: QueueEnd(region: try file.map(), notifier: notifiers.device, close: notifiers.device.close)
///             )
///         )
///     }
///
///     func withProcessEnds<Visitor: ProcessEndsVisitor>(
///         layout: RegionLayout,
///         keeping side: QueueSide,
///         _ visitor: Visitor
///     ) throws -> ProcessEndsOutcome<Visitor.Output> {
///         let file = try RegionFile(byteCount: layout.regionSize)
///         let (local, socket) = try Self.notifierAndPeerSocket()
///         let remote = PortableEnd(
///             mappings: [PortableMapping(descriptor: try duplicate(file.fileDescriptor), byteCount: layout.regionSize)],
///             notifier: PortableNotifier(socket: socket)
///         )
///         return .visited(
///             try visitor.visit(
///                 ProcessEnds(local: QueueEnd(region: try file.map(), notifier: local, close: local.close), remote: remote)
///             )
///         )
///     }
///
///     /// A notifier, and a copy of its peer's socket that is the only one left: the peer's
///     /// notifier object goes away when this returns, closing its own descriptor.
///     static func notifierAndPeerSocket() throws -> (SocketNotifier, CInt) {
///         let pair = try SocketNotifier.makePair()
///         return (pair.driver, try duplicate(pair.device.socket))
///     }
/// }
/// ```
///
/// (`duplicate` is `fcntl(descriptor, F_DUPFD_CLOEXEC, 0)`.) A backend whose ends cannot leave
/// this process says so instead:
///
/// ```swift
/// func withProcessEnds<Visitor: ProcessEndsVisitor>(
///     layout: RegionLayout, keeping side: QueueSide, _ visitor: Visitor
/// ) throws -> ProcessEndsOutcome<Visitor.Output> {
///     .notApplicable(reason: "heap memory and a semaphore of this process: no other process can hold either")
/// }
/// ```
///
/// The suite moves a region to a thread of its own (the device's side of most checks, the
/// survivor's of ``ConformanceCheck/peerProcessDeath``), so the regions handed to
/// ``QueueEndsVisitor`` and ``ProcessEndsVisitor`` must be `Sendable`: the compiler checks memory
/// rule 6 of <doc:WritingABackend> ("it may be used from another thread than the one that made
/// it"). A region that holds raw pointers states it with `@unchecked Sendable` on its own type —
/// its author's promise, not the suite's.
///
/// The rules a backend must keep are in <doc:WritingABackend>.
public protocol ConformanceBackend: Sendable {
    /// A short name for failure messages, such as `"heap"` or `"shared-memory"`.
    var name: String { get }

    /// Makes fresh memory mapping at least bus addresses `0..<layout.regionSize` (the header and
    /// each ring inside one mapping; the data area may span adjacent ones) and a connected notifier pair,
    /// and calls `visitor` with both ends.
    ///
    /// The two ends must be the *same* memory — two handles, or two mappings of one file — and
    /// the two notifiers must be connected: the driver's `notify()` wakes the device's `wait()`
    /// and the other way round. The suite writes the region header itself, through the driver's
    /// end, before it attaches any queue. Release everything once `visitor` returns.
    ///
    /// - Parameters:
    ///   - layout: The layout the suite will write into the region.
    ///   - visitor: The suite's code; call it exactly once.
    /// - Returns: What `visitor` returns.
    /// - Throws: Whatever making the ends or `visitor` throws.
    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output

    /// Makes fresh memory and a connected notifier pair as ``withQueueEnds(layout:_:)`` does, but
    /// with only `side`'s end in this process: the other end is a ``PortableEnd``, the file
    /// descriptors another process needs to map the memory and to notify and wait. Calls `visitor`
    /// with both, or returns ``ProcessEndsOutcome/notApplicable(reason:)`` saying why the backend
    /// cannot put an end in another process.
    ///
    /// ``ConformanceCheck/peerProcessDeath`` hands the portable end to the suite's helper process
    /// (`VirtqueueConformanceHelper`), which maps it, acts as the other side, and is killed with
    /// `SIGKILL` mid-stream; the end kept here must then end its waits with
    /// `VirtqueueError.Code.peerDied`. So:
    ///
    /// - Nothing in this process may keep the peer's end open: the portable end's descriptors
    ///   are the *only* ones for its side (the suite closes its copies once the helper holds
    ///   them), and the local notifier must not hold them either. A process that keeps a copy of
    ///   its peer's socket never sees the peer die.
    /// - Make the descriptors close-on-exec (the suite also sets `FD_CLOEXEC` on them at once),
    ///   so that no other child process started meanwhile inherits them.
    /// - The local end must notice the death through the kernel alone: the helper is started
    ///   after this call hands over the ends, and nothing tells the local end its process id.
    ///
    /// Return ``ProcessEndsOutcome/notApplicable(reason:)`` when both ends cannot but live in
    /// one process (heap memory, a semaphore): the suite reports the check as not applicable,
    /// with the reason, instead of passing it.
    ///
    /// - Parameters:
    ///   - layout: The layout the suite will write into the region (through the local end).
    ///   - side: The side whose end stays in this process; the portable end is the other side's.
    ///   - visitor: The suite's code; call it at most once.
    /// - Returns: What `visitor` returns, or why the check does not apply.
    /// - Throws: Whatever making the ends or `visitor` throws.
    func withProcessEnds<Visitor: ProcessEndsVisitor>(
        layout: RegionLayout,
        keeping side: QueueSide,
        _ visitor: Visitor
    ) throws -> ProcessEndsOutcome<Visitor.Output>

    /// Starts a ``ConformanceDevice`` serving queue 0 of a fresh region for `layout` the way this
    /// backend starts devices (on a thread, in a child process), and calls `visitor` with the
    /// driver's end of it; returns `nil` if the backend cannot start devices.
    ///
    /// The backend writes the region header (the device attaches before the suite sees the
    /// region). The default implementation returns `nil`: the suite then runs the device on a
    /// thread of its own, over ``withQueueEnds(layout:_:)``.
    ///
    /// - Parameters:
    ///   - layout: The region's layout.
    ///   - visitor: The suite's code; call it exactly once.
    /// - Returns: What `visitor` returns, or `nil` when not supported.
    /// - Throws: Whatever starting the device or `visitor` throws.
    func withLaunchedDevice<Visitor: LaunchedDeviceVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output?
}

extension ConformanceBackend {
    /// Not supported: returns `nil`.
    public func withLaunchedDevice<Visitor: LaunchedDeviceVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output? {
        nil
    }
}

/// The suite's side of ``ConformanceBackend/withQueueEnds(layout:_:)``: code that is generic
/// over the backend's region and notifier types.
///
/// Backends only call ``visit(_:)``; the suite implements it. The region must be `Sendable`:
/// the suite runs one end (usually the device's) on a thread of its own.
public protocol QueueEndsVisitor {
    /// What the visit returns.
    associatedtype Output

    /// Uses the two ends of one queue.
    ///
    /// - Parameter ends: The driver's and the device's end of the same region.
    /// - Returns: Whatever the suite computes.
    /// - Throws: A ``ConformanceFailure``, or an error from the backend's region or notifier.
    func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
        _ ends: consuming QueueEnds<Region, Notify>
    ) throws -> Output
}

/// The suite's side of ``ConformanceBackend/withProcessEnds(layout:keeping:_:)``.
///
/// Backends only call ``visit(_:)``; the suite implements it. The region must be `Sendable`:
/// the suite runs the local end on a thread of its own, so that a wait the peer's death does not
/// end fails the check after a timeout instead of hanging it.
public protocol ProcessEndsVisitor {
    /// What the visit returns.
    associatedtype Output

    /// Uses one end of a queue here and hands the other to a helper process.
    ///
    /// - Parameter ends: The local end, and the other side's end as descriptors.
    /// - Returns: Whatever the suite computes.
    /// - Throws: A ``ConformanceFailure``, or an error from the backend's region or notifier.
    func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
        _ ends: consuming ProcessEnds<Region, Notify>
    ) throws -> Output
}

/// What ``ConformanceBackend/withProcessEnds(layout:keeping:_:)`` did.
public enum ProcessEndsOutcome<Output> {
    /// The backend called the visitor, which returned this.
    case visited(Output)
    /// The backend cannot put an end in another process, for this reason (for example: "heap
    /// memory and a semaphore of this process; no other process can hold either"). The suite
    /// reports ``ConformanceCheck/peerProcessDeath`` as ``ConformanceResult/Outcome/notApplicable``
    /// with it.
    case notApplicable(reason: String)
}

extension ProcessEndsOutcome: Sendable where Output: Sendable {}

/// The suite's side of ``ConformanceBackend/withLaunchedDevice(layout:_:)``.
///
/// Backends only call ``visit(_:)``; the suite implements it. The region need not be `Sendable`:
/// the suite drives a launched device's queue only from the thread that called the backend (the
/// device runs wherever the backend put it, with its own end).
public protocol LaunchedDeviceVisitor {
    /// What the visit returns.
    associatedtype Output

    /// Drives a launched ``ConformanceDevice``.
    ///
    /// - Parameter device: The driver's end of the launched device.
    /// - Returns: Whatever the suite computes.
    /// - Throws: A ``ConformanceFailure``, or an error from the backend.
    func visit<Region: GuestMemory & ~Copyable, Notify: Notifier>(
        _ device: consuming LaunchedDevice<Region, Notify>
    ) throws -> Output
}
