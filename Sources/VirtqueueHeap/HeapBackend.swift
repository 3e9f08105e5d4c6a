import Foundation
import Synchronization
public import Virtqueue

/// The heap isolation level: driver and device in one process, the device on its own thread.
///
/// ```swift
/// let layout = try RegionLayout(queueSizes: [256], dataAreaSize: 1 << 20, features: .all)
/// let device = try HeapBackend.launch(Uppercase.self, layout: layout)
/// var driver = try device.makeDriverQueue()
/// … submit, notify, wait, take used …
/// device.stop()   // closes the driver's end; the device thread returns: .finished
/// ```
///
/// The handle, a ``DeviceThread``, is a `DeviceHandle` like the other levels' handles, so the
/// same driver code runs with the device in a child process or a sandbox.
public enum HeapBackend {
    /// Allocates a region for `layout`, starts `Device` on a new thread serving queue
    /// `queueIndex`, and returns the driver's handle to it once the device is created.
    ///
    /// The thread attaches the device's queue to the region and creates the device with
    /// `configuration` (`DeviceComponent/init(configuration:)`); `launch` returns only once both
    /// have succeeded, so a configuration the device refuses is reported here.
    ///
    /// - Parameters:
    ///   - device: The device type.
    ///   - layout: The region's layout.
    ///   - queueIndex: The queue the device serves.
    ///   - spins: How long the device polls before sleeping.
    ///   - configuration: Handed to `DeviceComponent/init(configuration:)`; file
    ///     descriptors keep their numbers, since the device shares this process.
    /// - Returns: The driver's handle to the running device.
    /// - Throws: `VirtqueueError` if the layout cannot be allocated; `DeviceFailure` with
    ///   `DeviceTermination/failedToStart(_:)` if the device's queue cannot attach or its factory
    ///   throws (the thrown error in `DeviceFailure/underlyingError`).
    @inlinable
    public static func launch<Device: DeviceComponent>(
        _ device: Device.Type,
        layout: RegionLayout,
        queueIndex: Int = 0,
        spins: Int = 256,
        configuration: DeviceConfiguration = DeviceConfiguration()
    ) throws -> DeviceThread {
        let region = try HeapRegion(layout: layout)
        let notifiers = HeapNotifier.makePair()
        let thread = DeviceThread(
            deviceName: Device.name,
            queueIndex: queueIndex,
            region: region,
            notifier: notifiers.driver,
            deviceNotifier: notifiers.device
        )
        thread.start { started throws -> Void in
            var queue = try DeviceThread.starting {
                try DeviceQueue(
                    region: region,
                    notifier: notifiers.device,
                    queueIndex: queueIndex,
                    supportedFeatures: Device.supportedFeatures
                )
            }
            var instance = try DeviceThread.starting { try Device(configuration: configuration) }
            started()
            try queue.serve(&instance, spins: spins)
        }
        try thread.waitUntilStarted()
        return thread
    }
}

/// A device running on a thread of this process: the driver's handle to it.
///
/// Build the driver's queue with `makeDriverQueue(bufferSize:poolRange:indirectThreshold:)`
/// (or from ``makeRegion()`` and ``notifier``). ``stop()`` closes the driver's end, waits for
/// the thread to return and says how the device ended; ``failure()`` says why it ended early.
/// A thread cannot be killed: a device that never returns from `handle` keeps `stop()` waiting.
public final class DeviceThread: DeviceHandle {
    /// The device's `DeviceComponent/name`.
    public let deviceName: String
    /// The queue the device serves.
    public let queueIndex: Int
    /// The driver's end of the notifier pair.
    public let notifier: HeapNotifier
    let region: HeapRegion
    let deviceNotifier: HeapNotifier
    /// Signalled once, when the device has started serving or has ended, whichever comes first.
    let settled = DispatchSemaphore(value: 0)
    /// Signalled when the thread has finished (and again by each waiter, for the next).
    let finished = DispatchSemaphore(value: 0)
    let state = Mutex(State())

    /// What the thread has done so far.
    struct State {
        var started = false
        var ending: (termination: DeviceTermination, error: (any Error)?)?
    }

    /// Wraps what the thread threw before the device served: attaching its queue or creating it.
    @usableFromInline
    struct StartFailure: Error {
        let error: any Error
    }

    /// Runs a step of the device's start, marking what it throws as a failure to start.
    @usableFromInline
    static func starting<Value: ~Copyable>(_ step: () throws -> Value) throws(StartFailure) -> Value {
        do {
            return try step()
        } catch {
            throw StartFailure(error: error)
        }
    }

    @usableFromInline
    init(deviceName: String, queueIndex: Int, region: HeapRegion, notifier: HeapNotifier, deviceNotifier: HeapNotifier)
    {
        self.deviceName = deviceName
        self.queueIndex = queueIndex
        self.region = region
        self.notifier = notifier
        self.deviceNotifier = deviceNotifier
    }

    /// Where the device runs: `DeviceLocation/thread`.
    public var location: DeviceLocation { .thread }

    /// The region the device serves (another handle to the same memory).
    public func makeRegion() -> HeapRegion { region }

    /// Runs `body` on a new thread; `body` calls its argument once the device is created.
    @usableFromInline
    func start(_ body: @escaping @Sendable (_ started: () -> Void) throws -> Void) {
        let thread = Thread { [self] in
            let ending: (DeviceTermination, (any Error)?)
            do {
                try body {
                    state.withLock { $0.started = true }
                    settled.signal()
                }
                ending = (.finished, nil)
            } catch let failure as StartFailure {
                ending = (.failedToStart("\(failure.error)"), failure.error)
            } catch {
                ending = (.threw("\(error)"), error)
            }
            // Recorded before the device's end is closed, so a driver that sees peerDied finds
            // the cause.
            let wasStarted = state.withLock { state in
                state.ending = ending
                return state.started
            }
            deviceNotifier.close()
            if !wasStarted { settled.signal() }
            finished.signal()
        }
        thread.name = "virtqueue-device"
        thread.start()
    }

    /// Waits until the device serves, or throws why it could not start.
    @usableFromInline
    func waitUntilStarted() throws(DeviceFailure) {
        settled.wait()
        if let failure = failure() {
            finished.wait()
            finished.signal()
            throw failure
        }
    }

    /// Closes the driver's end, waits for the device thread to return, and says how it ended:
    /// `DeviceTermination/finished` when it served until now,
    /// `DeviceTermination/threw(_:)` when it threw (the error is in ``failure()``).
    @discardableResult
    public func stop() -> DeviceTermination {
        notifier.close()
        finished.wait()
        finished.signal()
        return state.withLock { $0.ending?.termination } ?? .finished
    }

    /// Why the device thread ended early, if it has: the error it threw, named with the device.
    /// `nil` while it runs and when it served until its driver hung up.
    public func failure() -> DeviceFailure? {
        guard let ending = state.withLock({ $0.ending }), ending.termination != .finished else { return nil }
        return DeviceFailure(
            deviceName: deviceName,
            location: .thread,
            termination: ending.termination,
            underlyingError: ending.error
        )
    }
}
