import CVirtqueueSystem
import Glibc
import SystemPackage
public import Virtqueue

/// The shared-memory isolation level: the device runs in a child process, the ring lives in a
/// sealed memfd both processes map, and notifications travel through two notification sockets
/// (``EventNotifier``).
///
/// The child is started with `posix_spawn` (never `fork`) from an executable that hosts the
/// device — usually this very executable, re-entered in the device role (see ``DeviceHost``).
/// It inherits, besides 0, 1 and 2: the region file as 3, the first queue's wait end of the
/// kick channel as 4 and notify end of the call channel as 5, a liveness socket as 6, each
/// further queue's two ends as 7 and 8, 9 and 10, …, then the descriptors of
/// ``LaunchOptions/configuration`` (`docs/wire-format.md`, section 8). Its arguments name each
/// queue and its two descriptors.
/// The parent keeps the other ends and none of the child's: nothing the child does to its
/// descriptors can make the parent's `notify()` or `wait()` block.
///
/// ```swift
/// // main.swift of an executable that holds both sides:
/// DeviceHost.runIfDeviceRole(devices: [DeviceHost.Entry(Uppercase.self)])   // returns only in the parent role
/// let layout = try RegionLayout(queueSizes: [256], dataAreaSize: 1 << 20, features: .all)
/// let device = try SharedMemoryBackend.launch(Uppercase.self, layout: layout)
/// var driver = try device.makeDriverQueue()
/// … submit, notify, wait, take used: the same code as on the heap backend …
/// device.stop()   // hangs up; the device returns from serve and exits 0: .finished
/// ```
///
/// The handle, a ``DeviceProcess``, is a `DeviceHandle` like the other levels' handles.
public enum SharedMemoryBackend {
    /// Creates a sealed region for `layout`, starts `Device` in a child process serving
    /// `options.servedQueues` (each further queue on a thread of its own), and returns the driver's handle to it once the device is created.
    ///
    /// The child attaches the device's queue and creates the device with
    /// ``LaunchOptions/configuration`` (`DeviceComponent/init(configuration:)`), then reports
    /// that it started; `launch` waits up to ``LaunchOptions/startupTimeout`` for that report, so
    /// a configuration the device refuses, or a device its host does not know, is reported here.
    ///
    /// - Parameters:
    ///   - device: The device type; the child looks it up by its `DeviceComponent/name`.
    ///   - layout: The region's layout.
    ///   - options: The executable, extra arguments and other settings.
    /// - Returns: The driver's handle to the running device.
    /// - Throws: `DeviceFailure` if the device did not start: its factory threw (the error's
    ///   description in `DeviceTermination/failedToStart(_:)`), its host does not know it, or
    ///   the child ended; ``SharedMemoryError`` if the region cannot be made, the child cannot be
    ///   started, or it did not report within the startup timeout.
    public static func launch<Device: DeviceComponent>(
        _ device: Device.Type,
        layout: RegionLayout,
        options: LaunchOptions = LaunchOptions()
    ) throws -> DeviceProcess {
        let file = try SharedMemoryFile.create(layout: layout, name: options.regionName ?? "virtqueue-\(Device.name)")
        return try launch(device, file: file, options: options)
    }

    /// Starts `Device` in a child process serving queue `options.queueIndex` of an existing
    /// region file (for example a region with several queues, each served by its own process),
    /// and returns the driver's handle to it once the device is created.
    ///
    /// - Throws: `DeviceFailure` if the device did not start; ``SharedMemoryError`` if the child
    ///   cannot be started or did not report within the startup timeout. See
    ///   ``launch(_:layout:options:)``.
    public static func launch<Device: DeviceComponent>(
        _ device: Device.Type,
        file: SharedMemoryFile,
        options: LaunchOptions = LaunchOptions()
    ) throws -> DeviceProcess {
        let process = try spawn(device, file: file, options: options, interpreter: nil)
        try process.awaitStart(timeout: options.startupTimeout)
        return process
    }

    /// Starts the child and returns its handle without waiting for it: the launchers then wait
    /// for what it reports (the sandboxed level, its confinement report first).
    ///
    /// - Parameter interpreter: How the launcher reads the child's ending beyond the generic
    ///   reading; `nil` for a plain device process.
    /// - Throws: ``SharedMemoryError`` if the child cannot be started.
    package static func spawn<Device: DeviceComponent>(
        _ device: Device.Type,
        file: SharedMemoryFile,
        options: LaunchOptions,
        interpreter: DeviceProcess.Interpreter?
    ) throws(SharedMemoryError) -> DeviceProcess {
        let queues = options.servedQueues
        do {
            try RegionLayout.validateServedQueues(queues)
        } catch {
            throw SharedMemoryError(.invalidArgument, error.message)
        }
        guard options.configuration.fileDescriptors.count <= DeviceHost.maximumConfiguredDescriptors else {
            throw SharedMemoryError(
                .invalidArgument,
                "\(options.configuration.fileDescriptors.count) configured descriptors; at most \(DeviceHost.maximumConfiguredDescriptors) can be passed"
            )
        }
        guard options.spins >= 0 else {
            throw SharedMemoryError(.invalidArgument, "spin count \(options.spins) is negative")
        }
        let executable: String
        if let path = options.executable {
            executable = path.string
        } else {
            executable = try currentExecutable()
        }
        var arguments = [
            executable,
            DeviceHost.deviceArgument, Device.name,
            DeviceHost.spinsArgument, String(options.spins),
        ]
        // The first queue's ends are 4 and 5, the further queues' follow the liveness socket (6).
        for (position, index) in queues.enumerated() {
            let kick = position == 0 ? 4 : 5 + 2 * position
            arguments += [DeviceHost.queueArgument, "\(index):\(kick):\(kick + 1)"]
        }
        if !file.isSealed { arguments.append(DeviceHost.unsealedArgument) }
        for argument in options.configuration.arguments {
            arguments += [DeviceHost.configurationArgument, argument]
        }
        if !options.configuration.fileDescriptors.isEmpty {
            arguments += [DeviceHost.descriptorsArgument, String(options.configuration.fileDescriptors.count)]
        }
        arguments += options.arguments
        let environment = options.environment.map { $0.map { "\($0.key)=\($0.value)" } }

        var owned: [CInt] = []
        do throws(SharedMemoryError) {
            // Per queue, the device waits on the kick channel and the driver on the call channel;
            // the child gets the kick's wait end and the call's notify end, the parent keeps the others.
            var channels:
                [(
                    kick: (waitEnd: FileDescriptor, notifyEnd: FileDescriptor),
                    call: (waitEnd: FileDescriptor, notifyEnd: FileDescriptor)
                )] = []
            for _ in queues {
                let kick = try EventNotifier.makeChannel()
                owned += [kick.waitEnd.rawValue, kick.notifyEnd.rawValue]
                let call = try EventNotifier.makeChannel()
                owned += [call.waitEnd.rawValue, call.notifyEnd.rawValue]
                channels.append((kick, call))
            }
            var sockets: [CInt] = [-1, -1]
            try retrying("socketpair") { vq_socketpair(&sockets) }
            owned += sockets
            var childEnds = [channels[0].kick.waitEnd.rawValue, channels[0].call.notifyEnd.rawValue, sockets[1]]
            for channel in channels.dropFirst() {
                childEnds += [channel.kick.waitEnd.rawValue, channel.call.notifyEnd.rawValue]
            }
            let inherited = [file.fileDescriptor.rawValue] + childEnds + options.configuration.fileDescriptors
            let pid = try spawn(executable, arguments: arguments, environment: environment, descriptors: inherited)
            closeDescriptors(childEnds)
            owned.removeAll { childEnds.contains($0) }
            // From here the child exists: every failure must still reap it, so the handle takes
            // the descriptors first and its deinit cleans up.
            let pidfd = vq_pidfd_open(pid)
            let notifiers = channels.map { channel in
                EventNotifier(
                    waitingOn: channel.call.waitEnd,
                    notifying: channel.kick.notifyEnd,
                    liveness: liveness(pidfd: pidfd, socket: sockets[0])
                )
            }
            owned.removeAll()
            return DeviceProcess(
                processID: pid,
                pidfd: pidfd,
                livenessSocket: sockets[0],
                deviceName: Device.name,
                queueIndices: queues,
                file: file,
                notifiers: notifiers,
                stopGracePeriod: options.stopGracePeriod,
                interpreter: interpreter
            )
        } catch {
            closeDescriptors(owned)
            throw error
        }
    }

    /// What a driver notifier watches for the child's death: a copy of its pidfd, or where the
    /// kernel has none, a copy of the liveness socket.
    static func liveness(pidfd: CInt, socket: CInt) -> EventNotifier.Liveness {
        if pidfd >= 0, case let copy = vq_dup_cloexec(pidfd, 0), copy >= 0 {
            return .process(FileDescriptor(rawValue: copy))
        }
        let copy = vq_dup_cloexec(socket, 0)
        return copy >= 0 ? .connection(FileDescriptor(rawValue: copy)) : .none
    }

    /// This process's executable, from `/proc/self/exe`.
    static func currentExecutable() throws(SharedMemoryError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { throw .system("readlink(/proc/self/exe)") }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `posix_spawn` with exactly `descriptors` inherited as 3, 4, ….
    static func spawn(
        _ path: String,
        arguments: [String],
        environment: [String]?,
        descriptors: [CInt]
    ) throws(SharedMemoryError) -> pid_t {
        var pid: pid_t = 0
        let status: CInt = withCStringArray(arguments) { argv in
            if let environment {
                return withCStringArray(environment) { envp in
                    vq_spawn(&pid, path, argv, envp, descriptors, CInt(descriptors.count))
                }
            }
            return vq_spawn(&pid, path, argv, nil, descriptors, CInt(descriptors.count))
        }
        guard status == 0 else {
            throw SharedMemoryError(
                .spawnFailed,
                "posix_spawn of \(path) failed",
                underlyingError: Errno(rawValue: status)
            )
        }
        return pid
    }
}

/// Calls `body` with a NULL-terminated array of C strings, freed afterwards.
func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer {
        for pointer in pointers { free(pointer) }
    }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress.unsafelyUnwrapped) }
}
