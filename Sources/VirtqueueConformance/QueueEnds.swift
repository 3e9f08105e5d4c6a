public import Virtqueue

/// One side's end of a queue: its handle to the shared region and its notifier.
public struct QueueEnd<Region: GuestMemory & ~Copyable, Notify: Notifier>: ~Copyable {
    /// This side's handle to (or mapping of) the region.
    public var region: Region
    /// This side's notifier: `notify()` wakes the other side's `wait()`.
    public var notifier: Notify
    /// Closes this side's end of the notifier pair, as if this side had died: the other side's
    /// current and later `wait()` calls must end with `VirtqueueError.Code.peerDied`.
    /// Calling it twice must be harmless.
    public var close: @Sendable () -> Void

    /// Creates an end.
    ///
    /// - Parameters:
    ///   - region: This side's handle to the region.
    ///   - notifier: This side's notifier.
    ///   - close: Closes this side's end; see ``close``.
    public init(region: consuming Region, notifier: Notify, close: @escaping @Sendable () -> Void) {
        self.region = region
        self.notifier = notifier
        self.close = close
    }
}

/// Both ends of one queue, over the same memory: what ``ConformanceBackend/withQueueEnds(layout:_:)``
/// gives the suite.
public struct QueueEnds<Region: GuestMemory & ~Copyable, Notify: Notifier>: ~Copyable {
    /// The driver's end.
    public var driver: QueueEnd<Region, Notify>
    /// The device's end.
    public var device: QueueEnd<Region, Notify>

    /// Creates the pair.
    ///
    /// - Parameters:
    ///   - driver: The driver's end.
    ///   - device: The device's end, over the same bytes as the driver's.
    public init(driver: consuming QueueEnd<Region, Notify>, device: consuming QueueEnd<Region, Notify>) {
        self.driver = driver
        self.device = device
    }
}

/// A ``ConformanceDevice`` running wherever the backend runs devices, seen from the driver.
public struct LaunchedDevice<Region: GuestMemory & ~Copyable, Notify: Notifier>: ~Copyable {
    /// The driver's handle to the region the device serves (its header already written).
    public var region: Region
    /// The driver's notifier: kicks the device and waits for it.
    public var notifier: Notify
    /// Ends the device in an orderly way — hang up, let it return from
    /// `DeviceQueue.serve(_:spins:)`, wait for it — and throws if the device failed.
    /// The suite calls it once, at the end (also after ``kill``).
    public var stop: @Sendable () throws -> Void
    /// Ends the device abruptly, as a crash would (`SIGKILL` for a process), without waiting;
    /// `nil` when the backend cannot (a thread cannot be killed). The driver's notifier must then
    /// end its waits with `VirtqueueError.Code.peerDied`.
    public var kill: (@Sendable () throws -> Void)?

    /// Creates the driver's end of a launched device.
    ///
    /// - Parameters:
    ///   - region: The driver's handle to the region.
    ///   - notifier: The driver's notifier.
    ///   - stop: Stops the device; see ``stop``.
    ///   - kill: Kills the device; see ``kill``.
    public init(
        region: consuming Region,
        notifier: Notify,
        stop: @escaping @Sendable () throws -> Void,
        kill: (@Sendable () throws -> Void)? = nil
    ) {
        self.region = region
        self.notifier = notifier
        self.stop = stop
        self.kill = kill
    }
}

extension QueueEnd: Sendable where Region: Sendable & ~Copyable {}
extension QueueEnds: Sendable where Region: Sendable & ~Copyable {}
extension LaunchedDevice: Sendable where Region: Sendable & ~Copyable {}
