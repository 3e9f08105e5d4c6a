import Foundation
public import Virtqueue

/// The heap isolation level: driver and device in one process, the device on its own thread.
///
/// ```swift
/// let layout = try RegionLayout(queueSizes: [256], dataAreaSize: 1 << 20, features: .all)
/// let device = try HeapBackend.launch(Uppercase.self, layout: layout)
/// var driver = try DriverQueue(region: device.region, notifier: device.notifier)
/// … submit, notify, wait, take used …
/// try device.stop()   // closes the driver's end; the device thread returns
/// ```
public enum HeapBackend {
    /// Allocates a region for `layout`, starts `Device` on a new thread serving queue
    /// `queueIndex`, and returns what the driver needs.
    ///
    /// - Parameters:
    ///   - device: The device type.
    ///   - layout: The region's layout.
    ///   - queueIndex: The queue the device serves.
    ///   - spins: How long the device polls before sleeping.
    ///   - configuration: Handed to `DeviceComponent/init(configuration:)`; file
    ///     descriptors keep their numbers, since the device shares this process.
    ///
    /// - Throws: `VirtqueueError` if the layout cannot be allocated.
    @inlinable
    public static func launch<Device: DeviceComponent>(
        _ device: Device.Type,
        layout: RegionLayout,
        queueIndex: Int = 0,
        spins: Int = 256,
        configuration: DeviceConfiguration = DeviceConfiguration()
    ) throws(VirtqueueError) -> DeviceThread {
        let region = try HeapRegion(layout: layout)
        let notifiers = HeapNotifier.makePair()
        let thread = DeviceThread(region: region, notifier: notifiers.driver, deviceNotifier: notifiers.device)
        thread.start { () throws -> Void in
            var queue = try DeviceQueue(
                region: region,
                notifier: notifiers.device,
                queueIndex: queueIndex,
                supportedFeatures: Device.supportedFeatures
            )
            var instance = try Device(configuration: configuration)
            try queue.serve(&instance, spins: spins)
        }
        return thread
    }
}

/// A device running on a thread of this process: the driver's handle to it.
public final class DeviceThread: Sendable {
    /// The region the device serves; build the driver's queue on it.
    public let region: HeapRegion
    /// The driver's end of the notifier pair.
    public let notifier: HeapNotifier
    let deviceNotifier: HeapNotifier
    let finished = DispatchSemaphore(value: 0)
    let outcome = OutcomeBox()

    @usableFromInline
    init(region: HeapRegion, notifier: HeapNotifier, deviceNotifier: HeapNotifier) {
        self.region = region
        self.notifier = notifier
        self.deviceNotifier = deviceNotifier
    }

    @usableFromInline
    func start(_ body: @escaping @Sendable () throws -> Void) {
        let thread = Thread { [self] in
            do {
                try body()
                outcome.set(nil)
            } catch {
                outcome.set(error)
            }
            deviceNotifier.close()
            finished.signal()
        }
        thread.name = "virtqueue-device"
        thread.start()
    }

    /// Closes the driver's end, waits for the device thread to return, and rethrows what it threw.
    public func stop() throws {
        notifier.close()
        finished.wait()
        finished.signal()
        if let error = outcome.get() { throw error }
    }

    final class OutcomeBox: @unchecked Sendable {
        let lock = NSLock()
        var error: (any Error)?
        func set(_ error: (any Error)?) { lock.withLock { self.error = error } }
        func get() -> (any Error)? { lock.withLock { error } }
    }
}
