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
        try launch(device, layout: layout, queues: [queueIndex], spins: spins, configuration: configuration)
    }

    /// Allocates a region for `layout` and starts `Device` serving each of `queues`, each on a
    /// thread of its own with a notifier pair of its own, and returns the driver's handle once
    /// every queue's device value is created.
    ///
    /// The device's `DeviceComponent/SharedState` is made once
    /// (`DeviceComponent/makeSharedState(configuration:)`), then each thread attaches its queue and
    /// creates its device value with `DeviceComponent/init(configuration:queue:shared:)`. The
    /// driver builds each queue's end with `DeviceHandle/makeDriverQueue(queue:bufferSize:poolRange:indirectThreshold:)`.
    /// When one queue's device throws, every queue's device end is closed: each driver queue's
    /// wait ends with `VirtqueueError/Code/peerDied`, as when a device process dies.
    ///
    /// - Parameters:
    ///   - device: The device type.
    ///   - layout: The region's layout.
    ///   - queues: The queues the device serves: distinct indices of `layout`'s queues, at least one.
    ///   - spins: How long each queue's device polls before sleeping.
    ///   - configuration: Handed to the device's factories.
    /// - Returns: The driver's handle to the running device.
    /// - Throws: `VirtqueueError` if `queues` is empty, repeats a queue or names one the layout
    ///   lacks, or the layout cannot be allocated; `DeviceFailure` with
    ///   `DeviceTermination/failedToStart(_:)` if a queue cannot attach, or the shared state or a
    ///   device value cannot be created.
    @inlinable
    public static func launch<Device: DeviceComponent>(
        _ device: Device.Type,
        layout: RegionLayout,
        queues: [Int],
        spins: Int = 256,
        configuration: DeviceConfiguration = DeviceConfiguration()
    ) throws -> DeviceThread {
        try RegionLayout.validateServedQueues(queues, queueCount: layout.queues.count)
        let region = try HeapRegion(layout: layout)
        let pairs = queues.map { _ in HeapNotifier.makePair() }
        let thread = DeviceThread(
            deviceName: Device.name,
            queueIndices: queues,
            region: region,
            notifiers: pairs.map(\.driver),
            deviceNotifiers: pairs.map(\.device)
        )
        let shared: Device.SharedState
        do {
            shared = try Device.makeSharedState(configuration: configuration)
        } catch {
            throw DeviceFailure(
                deviceName: Device.name,
                location: .thread,
                termination: .failedToStart("\(error)"),
                underlyingError: error
            )
        }
        for (position, queueIndex) in queues.enumerated() {
            let deviceNotifier = pairs[position].device
            thread.start(position: position) { started throws -> Void in
                var queue = try DeviceThread.starting {
                    try DeviceQueue(
                        region: region,
                        notifier: deviceNotifier,
                        queueIndex: queueIndex,
                        supportedFeatures: Device.supportedFeatures
                    )
                }
                var instance = try DeviceThread.starting {
                    try Device(configuration: configuration, queue: queueIndex, shared: shared)
                }
                started()
                try queue.serve(&instance, spins: spins)
            }
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
    /// The queues the device serves, one thread each.
    public let queueIndices: [Int]
    /// The driver's ends of the notifier pairs, one per queue, in the order of ``queueIndices``.
    public let notifiers: [HeapNotifier]
    let region: HeapRegion
    let deviceNotifiers: [HeapNotifier]
    /// Signalled once per queue, when its device has started serving or has ended, whichever
    /// comes first.
    let settled = DispatchSemaphore(value: 0)
    /// Left by each queue's thread when it has finished.
    let finished = DispatchGroup()
    let state = Mutex(State())

    /// What the threads have done so far.
    struct State {
        var started = 0
        var ended = 0
        /// The first failure; `finished` once every thread returned without one.
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
    init(
        deviceName: String,
        queueIndices: [Int],
        region: HeapRegion,
        notifiers: [HeapNotifier],
        deviceNotifiers: [HeapNotifier]
    ) {
        self.deviceName = deviceName
        self.queueIndices = queueIndices
        self.region = region
        self.notifiers = notifiers
        self.deviceNotifiers = deviceNotifiers
    }

    /// The first queue the device serves.
    public var queueIndex: Int { queueIndices[0] }

    /// The driver's end of the first queue's notifier pair.
    public var notifier: HeapNotifier { notifiers[0] }

    /// The driver's end of queue `index`'s notifier pair, or `nil` if the device does not serve it.
    public func notifier(forQueue index: Int) -> HeapNotifier? {
        queueIndices.firstIndex(of: index).map { notifiers[$0] }
    }

    /// Where the device runs: `DeviceLocation/thread`.
    public var location: DeviceLocation { .thread }

    /// The region the device serves (another handle to the same memory).
    public func makeRegion() -> HeapRegion { region }

    /// Runs `body` on a new thread for the queue at `position`; `body` calls its argument once
    /// the device value is created.
    @usableFromInline
    func start(position: Int, _ body: @escaping @Sendable (_ started: () -> Void) throws -> Void) {
        finished.enter()
        let thread = Thread { [self] in
            var wasStarted = false
            var failure: (DeviceTermination, (any Error)?)?
            do {
                try body {
                    wasStarted = true
                    state.withLock { $0.started += 1 }
                    settled.signal()
                }
            } catch let error as StartFailure {
                failure = (.failedToStart("\(error.error)"), error.error)
            } catch {
                failure = (.threw("\(error)"), error)
            }
            // Recorded before the device's ends are closed, so a driver that sees peerDied finds
            // the cause.
            let count = queueIndices.count
            state.withLock { state in
                state.ended += 1
                if let failure, state.ending == nil || state.ending?.termination == .finished {
                    state.ending = failure
                } else if state.ending == nil && state.ended == count {
                    state.ending = (.finished, nil)
                }
            }
            if failure != nil {
                // The device has died: every queue's driver hears it.
                for notifier in deviceNotifiers { notifier.close() }
            } else {
                deviceNotifiers[position].close()
            }
            if !wasStarted { settled.signal() }
            finished.leave()
        }
        thread.name = "virtqueue-device-\(queueIndices[position])"
        thread.start()
    }

    /// Waits until every queue's device serves, or throws why one could not start (the others
    /// are stopped first).
    @usableFromInline
    func waitUntilStarted() throws(DeviceFailure) {
        for _ in queueIndices { settled.wait() }
        if let failure = failure() {
            for notifier in notifiers { notifier.close() }
            finished.wait()
            throw failure
        }
    }

    /// Closes the driver's ends, waits for every device thread to return, and says how the
    /// device ended: `DeviceTermination/finished` when it served until now,
    /// `DeviceTermination/threw(_:)` when one queue's device threw (the error is in ``failure()``).
    @discardableResult
    public func stop() -> DeviceTermination {
        for notifier in notifiers { notifier.close() }
        finished.wait()
        return state.withLock { $0.ending?.termination } ?? .finished
    }

    /// Why the device ended early, if it has: the first error a queue's device threw, named with
    /// the device. `nil` while it runs and when it served until its driver hung up.
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
