package import Virtqueue

extension DeviceHost {
    /// What a serving loop other than the blocking one (`VirtqueueAsync`'s) needs from the
    /// device host: the device's configuration and the start-up and failure reports.
    package struct Hosting: Sendable {
        let role: Role

        /// The device's configuration (`DeviceComponent/init(configuration:)`).
        package var configuration: DeviceConfiguration { role.configuration }

        /// How many times the loop polls before it sleeps (`LaunchOptions.spins`).
        package var spins: Int { role.spins }

        /// Reports that the device was created and serves.
        package func started() {
            DeviceHost.started(role)
        }

        /// Reports that the device could not be created; returns the exit code.
        package func creationFailed(_ error: any Error) -> Int32 {
            DeviceHost.creationFailed(role, error)
        }

        /// Reports that serving failed; returns the exit code.
        package func servingFailed(_ error: any Error) -> Int32 {
            DeviceHost.servingFailed(role, error)
        }
    }
}

extension DeviceHost.Entry {
    /// An entry whose serving loop is `serve` instead of the blocking `DeviceQueue/serve(_:spins:)`.
    ///
    /// - Parameters:
    ///   - name: The device's `DeviceComponent/name`.
    ///   - supportedFeatures: The device's `DeviceComponent/supportedFeatures`.
    ///   - requiresThreads: Whether `serve` creates threads; a confinement that forbids them
    ///     then stops the device at start-up with a report that says why.
    ///   - serve: Creates the device and serves the queue (the launch's one queue); returns the exit code.
    package init(
        name: String,
        supportedFeatures: @escaping @Sendable () -> Features,
        requiresThreads: Bool,
        serve: @escaping @Sendable (inout DeviceQueue<SharedMemoryRegion, EventNotifier>, DeviceHost.Hosting) -> Int32
    ) {
        self.init(name: name, supportedFeatures: supportedFeatures) { attachment, role in
            // Such a loop serves one queue: a launch that hands it several fails at start-up.
            guard attachment.queues.count == 1, let (index, notifier) = attachment.queues.first else {
                return DeviceHost.attachFailed(
                    role,
                    SharedMemoryError(
                        .invalidArgument,
                        "device \(name) serves one queue with this loop; the launch asked for \(attachment.queues.count)"
                    )
                )
            }
            var queue: DeviceQueue<SharedMemoryRegion, EventNotifier>
            do {
                queue = try attachment.queue(index, notifier: notifier)
            } catch {
                return DeviceHost.attachFailed(role, error)
            }
            return serve(&queue, DeviceHost.Hosting(role: role))
        }
        self.requiresThreads = requiresThreads
    }
}
