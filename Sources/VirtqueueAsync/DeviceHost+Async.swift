import Dispatch
public import Virtqueue
public import VirtqueueSharedMemory

extension DeviceHost.Entry {
    /// The entry for `device`, served with the async API: the child runs the serving loop as a
    /// task, waiting in ``EventLoop/shared`` instead of blocking in the notifier.
    ///
    /// The loop needs threads — the event loop's and Swift's cooperative pool — so a confinement
    /// that forbids them (a `SandboxConfinement` whose policy does not allow `clone`, as
    /// `SandboxPolicy.deviceLoop` does not) stops the device at start-up with a report that says
    /// so, and the launch fails with that message; see <doc:ChoosingAnAPI>. When the driver goes
    /// the loop ends and the child exits with status 0, as the blocking loop does. The async
    /// loop serves one queue: a launch that hands it several fails at start-up, naming the count
    /// (serve several queues with the blocking entry, `DeviceHost.Entry(_:)`).
    ///
    /// - Parameter device: The device type; its `handle` runs on the task.
    public init<Device: DeviceComponent>(async device: Device.Type) {
        self.init(name: Device.name, supportedFeatures: { Device.supportedFeatures }, requiresThreads: true) {
            queue,
            hosting in
            AsyncHosting.serve(Device.self, on: &queue, hosting: hosting)
        }
    }
}

/// The child's async serving loop.
enum AsyncHosting {
    /// Runs the loop as a task and blocks the calling thread — the child's main thread, which is
    /// not one of the pool's — until it ends; returns the exit code.
    static func serve<Device: DeviceComponent>(
        _ device: Device.Type,
        on queue: inout DeviceQueue<SharedMemoryRegion, EventNotifier>,
        hosting: DeviceHost.Hosting
    ) -> Int32 {
        let readiness: Readiness
        do {
            readiness = try EventLoop.shared.register(queue.notifier)
        } catch {
            return hosting.creationFailed(error)
        }
        let finished = DispatchSemaphore(value: 0)
        let status = UnsafeTransfer(UnsafeMutablePointer<Int32>.allocate(capacity: 1))
        defer { status.value.deallocate() }
        withUnsafeMutablePointer(to: &queue) { pointer in
            let queue = UnsafeTransfer(pointer)
            Task.detached {
                let code = await run(Device.self, on: queue.value, readiness: readiness, hosting: hosting)
                status.value.initialize(to: code)
                finished.signal()
            }
            finished.wait()
        }
        return status.value.pointee
    }

    static func run<Device: DeviceComponent>(
        _ device: Device.Type,
        on queue: UnsafeMutablePointer<DeviceQueue<SharedMemoryRegion, EventNotifier>>,
        readiness: Readiness,
        hosting: DeviceHost.Hosting
    ) async -> Int32 {
        var instance: Device
        do {
            instance = try Device(configuration: hosting.configuration)
        } catch {
            return hosting.creationFailed(error)
        }
        hosting.started()
        do {
            try await queue.pointee.serve(waitingWith: readiness, spins: hosting.spins) { request, queue in
                try instance.handle(request, on: queue)
            }
        } catch {
            if let error = error as? VirtqueueError, error.code == .peerDied { return DeviceHost.ExitCode.success }
            return hosting.servingFailed(error)
        }
        return DeviceHost.ExitCode.success
    }
}

/// A value handed to another task while its owner waits for that task: the caller guarantees
/// that only one of them touches it at a time.
struct UnsafeTransfer<Value>: @unchecked Sendable {
    let value: Value

    init(_ value: Value) {
        self.value = value
    }
}
