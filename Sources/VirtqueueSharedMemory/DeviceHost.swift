import CVirtqueueSystem
import Glibc
public import SystemPackage
public import Virtqueue

/// The child's side of the component host: an executable that can run as a device.
///
/// Call `runIfDeviceRole(devices:confinement:arguments:)` first thing in `main`. In the
/// parent (no device-role arguments) it returns at once; in a child started by
/// ``SharedMemoryBackend/launch(_:layout:options:)`` it attaches to the inherited region and
/// notifier, runs the named device until the driver hangs up, and exits — it never returns.
/// Name the devices with ``Entry`` values (`[DeviceHost.Entry(MyDevice.self)]`) so that each
/// one's serving loop is compiled for its type.
///
/// The child, step by step:
/// 1. finds the device type named by `--virtqueue-device` (exit 64 if unknown);
/// 2. adopts descriptors 3 (region) and 6 (liveness) and each served queue's kick and call
///    ends, as `--virtqueue-queue INDEX:KICK:CALL` names them (4 and 5 for the first queue),
///    marks them close-on-exec, checks that the notifier ends are notification sockets and the
///    region file's seals, and maps it (exit 71 on failure);
/// 3. runs the ``ChildConfinement`` (exit 72 if it throws) — nothing has read ring memory yet;
///    in the sandboxed role (``sandboxPolicyArgument`` present) a confinement that does not
///    apply the sandbox policy (``ChildConfinement/appliesSandboxPolicy``, false for
///    ``NoConfinement``) is refused with exit 72 before anything is served;
/// 4. reads and validates the header, builds each queue's `DeviceQueue` (exit 65 if the
///    region is malformed);
/// 5. creates the device with its `DeviceConfiguration` (exit 70 if that throws) — for several
///    queues, the shared state once and one device value per queue — tells the parent it
///    started, and serves until the driver hangs up (exit 0), the driver breaks a ring rule
///    (exit 65) or the device throws (exit 70). Each further queue is served on a thread of its
///    own; a queue that fails ends the whole process, so every queue's driver hears it.
///
/// The child tells its parent how its device fares with status records on the liveness socket
/// (`docs/wire-format.md`, section 8.1): that it started serving, or that it could not start or
/// stopped serving, with the error's description. The launcher waits for the first before it
/// hands out the device, so a configuration the device refuses fails the launch, and reads the
/// last when the child has ended, so its account names the error. A child in the sandboxed role
/// sends none before it has confined itself (its confinement report comes first).
public enum DeviceHost {
    /// The argument that selects the device role, followed by the device's name.
    public static let deviceArgument = "--virtqueue-device"
    /// The argument followed by a queue to serve, `INDEX:KICK:CALL` (the queue's index in the
    /// region, and the descriptor numbers of its kick channel's wait end and call channel's
    /// notify end), or `INDEX` alone for `INDEX:4:5`; once per queue (`docs/wire-format.md`, section 8).
    public static let queueArgument = "--virtqueue-queue"
    /// The argument followed by the spin count before sleeping.
    public static let spinsArgument = "--virtqueue-spins"
    /// The argument that accepts a region file without seals (the `shm_open` fallback).
    public static let unsealedArgument = "--virtqueue-unsealed"
    /// The argument followed by one argument for `DeviceConfiguration/arguments`; repeated.
    public static let configurationArgument = "--virtqueue-argument"
    /// The argument followed by the number of configured descriptors, inherited from 7 on.
    public static let descriptorsArgument = "--virtqueue-descriptors"
    /// The argument followed by the sandbox policy's encoding: present when `SandboxBackend.launch`
    /// started the child, which must then confine itself with that policy (the sandboxed role).
    public static let sandboxPolicyArgument = "--virtqueue-sandbox-policy"
    /// The most descriptors a ``LaunchOptions/configuration`` can pass.
    public static let maximumConfiguredDescriptors = 12

    /// The descriptor numbers a device process inherits.
    public enum InheritedDescriptor {
        /// The region file.
        public static let region: CInt = 3
        /// The first queue's wait end of the kick channel: the driver notifies through the other
        /// end, the device receives on this one. Further queues' ends follow the liveness socket,
        /// named by ``DeviceHost/queueArgument``.
        public static let kick: CInt = 4
        /// The first queue's notify end of the call channel: the device sends on it, the driver
        /// waits on the other end.
        public static let call: CInt = 5
        /// The liveness socket: hung up when the parent closes its end or dies.
        public static let liveness: CInt = 6
        /// The first of the `DeviceConfiguration/fileDescriptors` for a device that serves one
        /// queue; they follow the highest notifier end the handshake names.
        public static let firstConfigured: CInt = 7
    }

    /// The exit codes of a device process.
    public enum ExitCode {
        /// The driver hung up and the device stopped cleanly.
        public static let success: Int32 = 0
        /// The arguments are malformed or name an unknown device.
        public static let usage: Int32 = 64
        /// The region or the driver broke a rule: a malformed header or a ring violation.
        public static let dataError: Int32 = 65
        /// The device threw an error.
        public static let deviceFailed: Int32 = 70
        /// Setting up failed in the operating system (a descriptor is missing, `mmap` failed).
        public static let systemError: Int32 = 71
        /// The ``ChildConfinement`` threw.
        public static let confinementFailed: Int32 = 72
    }

    /// One served queue's notifier ends in a device process.
    public struct QueueEnds: Hashable, Sendable {
        /// The queue's index in the region.
        public var queueIndex: Int
        /// The kick channel's wait end: the device receives the driver's notifications on it.
        public var kick: FileDescriptor
        /// The call channel's notify end: the device notifies the driver on it.
        public var call: FileDescriptor
        /// The liveness descriptor this queue's notifier polls: descriptor 6 for the first
        /// queue, a duplicate of it (made before confinement) for each further one.
        public var liveness: FileDescriptor

        /// Creates the ends.
        public init(queueIndex: Int, kick: FileDescriptor, call: FileDescriptor, liveness: FileDescriptor) {
            self.queueIndex = queueIndex
            self.kick = kick
            self.call = call
            self.liveness = liveness
        }
    }

    /// What a device process knows about itself once it is set up; given to ``ChildConfinement``.
    public struct Context: Sendable {
        /// The device's name.
        public var deviceName: String
        /// The first queue it serves.
        public var queueIndex: Int
        /// Every queue it serves, with its notifier ends, in the order the launcher listed them.
        public var queues: [QueueEnds]
        /// How long it polls before sleeping.
        public var spins: Int
        /// The whole command line, including ``LaunchOptions/arguments``.
        public var arguments: [String]
        /// The region file's descriptor (3).
        public var regionFileDescriptor: FileDescriptor
        /// The notification socket the first queue's device waits on: the kick channel's wait
        /// end (4).
        public var kickFileDescriptor: FileDescriptor
        /// The notification socket the first queue's device notifies the driver through: the
        /// call channel's notify end (5).
        public var callFileDescriptor: FileDescriptor
        /// The liveness socket (6).
        public var livenessFileDescriptor: FileDescriptor
        /// The size of the region's mapping in bytes.
        public var regionByteCount: Int
        /// What the device will be created with: its arguments, and its descriptors (7, 8, …).
        public var configuration: DeviceConfiguration
    }

    /// The device-role settings parsed from a command line.
    @usableFromInline
    struct Role: Sendable {
        var deviceName: String
        /// Each served queue: its index and the descriptor numbers of its kick and call ends.
        var queues: [(index: Int, kick: CInt, call: CInt)] = []
        @usableFromInline var spins = 256
        var requireSeals = true
        @usableFromInline var configuration = DeviceConfiguration()
        /// Whether status records go to the parent (the liveness socket is a socket).
        @usableFromInline var reportsStatus = false

        init(deviceName: String) {
            self.deviceName = deviceName
        }
    }

    /// A device type this executable can host, with its serving loop compiled for that type.
    ///
    /// Create entries where the device types are known — in `main` — and pass them to
    /// `runIfDeviceRole(devices:confinement:arguments:)` taking entries:
    ///
    /// ```swift
    /// DeviceHost.runIfDeviceRole(devices: [DeviceHost.Entry(BlockDevice.self)], confinement: SandboxConfinement())
    /// ```
    ///
    /// The initializer is inlinable, so the compiler emits the device's serving loop in the
    /// caller's module, specialised for the device, ``SharedMemoryRegion`` and ``EventNotifier``:
    /// the device's `DeviceComponent/handle(_:on:)` and every queue call it makes run
    /// without generic dispatch. An entry made from an existential metatype (`any
    /// DeviceComponent.Type`, as the other overload does) works the same, only unspecialised.
    public struct Entry: Sendable {
        /// The device's `DeviceComponent/name`.
        public let name: String
        /// The device's `DeviceComponent/supportedFeatures`, read in the device role only.
        @usableFromInline let supportedFeatures: @Sendable () -> Features
        /// Creates the device and serves the attached queues with it; returns the exit code.
        @usableFromInline let serve: @Sendable (Attachment, Role) -> Int32
        /// Whether the serving loop creates threads (`VirtqueueAsync`'s): the host then asks the
        /// confinement whether they are allowed before it serves (``ChildConfinement/threadRestriction(_:)``).
        package var requiresThreads = false

        /// Creates the entry for `device`.
        ///
        /// - Parameter device: The device type.
        @inlinable
        public init<Device: DeviceComponent>(_ device: Device.Type) {
            self.init(
                name: Device.name,
                supportedFeatures: { Device.supportedFeatures },
                serve: { attachment, role in DeviceHost.serve(Device.self, attachment, role: role) }
            )
        }

        @usableFromInline
        init(
            name: String,
            supportedFeatures: @escaping @Sendable () -> Features,
            serve: @escaping @Sendable (Attachment, Role) -> Int32
        ) {
            self.name = name
            self.supportedFeatures = supportedFeatures
            self.serve = serve
        }
    }

    /// Runs as a device and exits if `arguments` select the device role; otherwise returns.
    ///
    /// Each entry's serving loop is specialised for its device type (see ``Entry``).
    ///
    /// - Parameters:
    ///   - devices: The devices this executable can host, told apart by name.
    ///   - confinement: The step run after set-up and before ring memory is touched.
    ///   - arguments: The command line; by default this process's.
    public static func runIfDeviceRole(
        devices: [Entry],
        confinement: some ChildConfinement = NoConfinement(),
        arguments: [String] = CommandLine.arguments
    ) {
        guard arguments.contains(deviceArgument) else { return }
        exit(run(devices: devices, confinement: confinement, arguments: arguments))
    }

    /// Runs as a device and exits if `arguments` select the device role; otherwise returns.
    ///
    /// The device type is chosen at run time, so its `DeviceComponent/handle(_:on:)`
    /// runs unspecialised, through the protocol's witness table (about three times the
    /// instructions per message); pass ``Entry`` values instead to have it specialised.
    ///
    /// - Parameters:
    ///   - devices: The device types this executable can host, told apart by name.
    ///   - confinement: The step run after set-up and before ring memory is touched.
    ///   - arguments: The command line; by default this process's.
    public static func runIfDeviceRole(
        devices: [any DeviceComponent.Type],
        confinement: some ChildConfinement = NoConfinement(),
        arguments: [String] = CommandLine.arguments
    ) {
        guard arguments.contains(deviceArgument) else { return }
        exit(run(devices: devices.map { Entry($0) }, confinement: confinement, arguments: arguments))
    }

    /// Runs the device role and returns the exit code.
    static func run(devices: [Entry], confinement: any ChildConfinement, arguments: [String]) -> Int32 {
        // Before confinement, only outside the sandboxed role: there the confinement report is
        // the first message the parent reads.
        let reportsStatus = livenessIsSocket()
        let reportsEarly = reportsStatus && !arguments.contains(sandboxPolicyArgument)
        var role: Role
        switch parse(arguments) {
        case .success(let parsed): role = parsed
        case .failure(let error):
            if reportsEarly { DeviceStatusRecord(.failedToStart, "\(error)").send(on: InheritedDescriptor.liveness) }
            return fail(ExitCode.usage, "\(error)")
        }
        role.reportsStatus = reportsStatus
        guard let device = devices.first(where: { $0.name == role.deviceName }) else {
            let known = devices.map { $0.name }.joined(separator: ", ")
            let message = "no device named \"\(role.deviceName)\" (this executable hosts: \(known))"
            if reportsEarly { DeviceStatusRecord(.failedToStart, message).send(on: InheritedDescriptor.liveness) }
            return fail(ExitCode.usage, message)
        }
        return serve(device, role: role, confinement: confinement, arguments: arguments)
    }

    /// Whether descriptor 6 is a socket, so status records can go there (checked before
    /// confinement, where `fstat` is still allowed).
    static func livenessIsSocket() -> Bool {
        var status = stat()
        return fstat(InheritedDescriptor.liveness, &status) == 0 && status.st_mode & S_IFMT == S_IFSOCK
    }

    /// Sets up (descriptors, region, notifier, confinement), attaches the queue and hands it to
    /// the entry's serving loop.
    static func serve(_ device: Entry, role: Role, confinement: any ChildConfinement, arguments: [String]) -> Int32 {
        let name = role.deviceName
        let sandboxed = arguments.contains(sandboxPolicyArgument)
        /// Fails before the device serves, telling the parent why when it may be told.
        func failToStart(_ code: Int32, _ message: String, confined: Bool) -> Int32 {
            if role.reportsStatus && (confined || !sandboxed) {
                DeviceStatusRecord(.failedToStart, message).send(on: InheritedDescriptor.liveness)
            }
            return fail(code, "\(name): \(message)")
        }
        let notifierEnds = role.queues.flatMap { [$0.kick, $0.call] }
        let inherited =
            [InheritedDescriptor.region, InheritedDescriptor.liveness] + notifierEnds
            + role.configuration.fileDescriptors
        for fd in inherited where vq_set_cloexec(fd, 1) != 0 {
            return failToStart(
                ExitCode.systemError,
                "inherited descriptor \(fd) is missing: \(Errno.current)",
                confined: false
            )
        }
        do throws(SharedMemoryError) {
            for queue in role.queues {
                try checkNotificationSocket(
                    queue.kick,
                    "inherited descriptor \(queue.kick) (queue \(queue.index) kick)"
                )
                try checkNotificationSocket(
                    queue.call,
                    "inherited descriptor \(queue.call) (queue \(queue.index) call)"
                )
            }
        } catch {
            return fail(ExitCode.systemError, "\(name): \(error.message)")
        }
        let region: SharedMemoryRegion
        do {
            let file = try SharedMemoryFile(
                adopting: FileDescriptor(rawValue: InheritedDescriptor.region),
                requireSeals: role.requireSeals
            )
            region = try file.map()
        } catch {
            let code = error.code == .systemCallFailed ? ExitCode.systemError : ExitCode.dataError
            return failToStart(code, "\(error)", confined: false)
        }
        // Each queue's notifier owns its liveness descriptor: the first queue's is 6, each
        // further one's a duplicate, made now while the process may still make one.
        var ends: [QueueEnds] = []
        for (position, queue) in role.queues.enumerated() {
            let liveness =
                position == 0 ? InheritedDescriptor.liveness : vq_dup_cloexec(InheritedDescriptor.liveness, 0)
            guard liveness >= 0 else {
                return failToStart(
                    ExitCode.systemError,
                    "dup of the liveness socket: \(Errno.current)",
                    confined: false
                )
            }
            ends.append(
                QueueEnds(
                    queueIndex: queue.index,
                    kick: FileDescriptor(rawValue: queue.kick),
                    call: FileDescriptor(rawValue: queue.call),
                    liveness: FileDescriptor(rawValue: liveness)
                )
            )
        }
        let context = Context(
            deviceName: name,
            queueIndex: ends[0].queueIndex,
            queues: ends,
            spins: role.spins,
            arguments: arguments,
            regionFileDescriptor: FileDescriptor(rawValue: InheritedDescriptor.region),
            kickFileDescriptor: ends[0].kick,
            callFileDescriptor: ends[0].call,
            livenessFileDescriptor: FileDescriptor(rawValue: InheritedDescriptor.liveness),
            regionByteCount: region.count,
            configuration: role.configuration
        )
        if sandboxed && !confinement.appliesSandboxPolicy {
            return failToStart(
                ExitCode.confinementFailed,
                "started in the sandboxed role, but this host's runIfDeviceRole has no sandbox "
                    + "confinement (\(type(of: confinement))); pass confinement: SandboxConfinement()",
                confined: false
            )
        }
        do {
            try confinement.confine(context)
        } catch {
            return failToStart(ExitCode.confinementFailed, "confinement failed: \(error)", confined: false)
        }
        if device.requiresThreads, let restriction = confinement.threadRestriction(context) {
            return failToStart(ExitCode.confinementFailed, restriction, confined: true)
        }
        let attachment = Attachment(
            region: region,
            queues: ends.map { end in
                (
                    end.queueIndex,
                    EventNotifier(waitingOn: end.kick, notifying: end.call, liveness: .connection(end.liveness))
                )
            },
            supportedFeatures: device.supportedFeatures()
        )
        return device.serve(attachment, role)
    }

    /// What the device host attached for a device: the mapped region and each served queue's
    /// index and notifier, in the order the launcher listed them.
    @usableFromInline
    struct Attachment: Sendable {
        @usableFromInline let region: SharedMemoryRegion
        @usableFromInline let queues: [(index: Int, notifier: EventNotifier)]
        @usableFromInline let supportedFeatures: Features

        /// The device's end of queue `index` of the region, notifying and waiting through `notifier`.
        @inlinable
        func queue(_ index: Int, notifier: EventNotifier) throws(VirtqueueError)
            -> DeviceQueue<SharedMemoryRegion, EventNotifier>
        {
            try DeviceQueue(region: region, notifier: notifier, queueIndex: index, supportedFeatures: supportedFeatures)
        }
    }

    /// Creates a `Device` and serves the attached queues with it until the driver hangs up;
    /// returns the exit code. Inlinable so that ``Entry/init(_:)`` specialises it for the device type.
    ///
    /// One queue is served on this thread, as it always was. For several, every queue is
    /// attached and every device value created first (a failure then fails the start), then each
    /// further queue is served on a thread of its own and the first on this one; a queue whose
    /// serving fails ends the process at once.
    @inlinable
    static func serve<Device: DeviceComponent>(
        _ device: Device.Type,
        _ attachment: Attachment,
        role: Role
    ) -> Int32 {
        let shared: Device.SharedState
        do {
            shared = try Device.makeSharedState(configuration: role.configuration)
        } catch {
            return creationFailed(role, error)
        }
        var servers: [QueueServer<Device>] = []
        for (index, notifier) in attachment.queues {
            let queue: DeviceQueue<SharedMemoryRegion, EventNotifier>
            do {
                queue = try attachment.queue(index, notifier: notifier)
            } catch {
                return attachFailed(role, error)
            }
            let instance: Device
            do {
                instance = try Device(configuration: role.configuration, queue: index, shared: shared)
            } catch {
                return creationFailed(role, error)
            }
            servers.append(QueueServer(queue: queue, device: instance))
        }
        started(role)
        let threads = ServingThreads()
        for server in servers.dropFirst() {
            guard threads.start({ server.run(role) }) else {
                return servingFailed(role, SharedMemoryError(.systemCallFailed, "a queue's thread could not start"))
            }
        }
        servers[0].run(role)
        threads.joinAll()
        return ExitCode.success
    }

    /// One queue of a device process and its device value, handed to the thread that serves it.
    @usableFromInline
    final class QueueServer<Device: DeviceComponent>: @unchecked Sendable {
        @usableFromInline var queue: DeviceQueue<SharedMemoryRegion, EventNotifier>?
        @usableFromInline var device: Device

        @usableFromInline
        init(queue: consuming DeviceQueue<SharedMemoryRegion, EventNotifier>, device: Device) {
            self.queue = consume queue
            self.device = device
        }

        /// Serves the queue until the driver hangs up; ends the process if serving fails.
        @inlinable
        func run(_ role: Role) {
            guard var queue = queue.take() else { return }
            // Both on this thread's stack for the whole loop, as a single queue's always were.
            var device = self.device
            do {
                try queue.serve(&device, spins: role.spins)
            } catch {
                DeviceHost.endProcess(DeviceHost.servingFailed(role, error))
            }
        }
    }

    /// Ends the process at once with `code` (`_exit`): a queue's serving failed, and every other
    /// queue's driver must hear that the device died.
    @usableFromInline
    static func endProcess(_ code: Int32) -> Never {
        _exit(code)
    }

    /// The threads that serve a device process's further queues.
    @usableFromInline
    final class ServingThreads {
        var threads: [StartedThread] = []

        @usableFromInline init() {}

        /// Starts a joinable thread running `body`; `false` if it cannot be started.
        @usableFromInline
        func start(_ body: @escaping @Sendable () -> Void) -> Bool {
            guard let thread = try? startJoinableThread(body) else { return false }
            threads.append(thread)
            return true
        }

        /// Waits for every thread to end.
        @usableFromInline
        func joinAll() {
            for thread in threads { thread.join() }
            threads.removeAll()
        }
    }

    /// Reports that a queue could not be attached (a malformed region); returns the exit code.
    @usableFromInline
    static func attachFailed(_ role: Role, _ error: any Error) -> Int32 {
        if role.reportsStatus {
            DeviceStatusRecord(.failedToStart, "\(error)").send(on: InheritedDescriptor.liveness)
        }
        return fail(ExitCode.dataError, "\(role.deviceName): \(error)")
    }

    /// Tells the parent that the device was created and serves from now on.
    @usableFromInline
    static func started(_ role: Role) {
        if role.reportsStatus { DeviceStatusRecord(.started).send(on: InheritedDescriptor.liveness) }
    }

    /// Reports that the device could not be created; returns the exit code.
    @usableFromInline
    static func creationFailed(_ role: Role, _ error: any Error) -> Int32 {
        if role.reportsStatus {
            DeviceStatusRecord(.failedToStart, "\(error)").send(on: InheritedDescriptor.liveness)
        }
        return fail(ExitCode.deviceFailed, "\(role.deviceName): the device could not be created: \(error)")
    }

    /// Reports why serving ended with `error`; returns the exit code.
    @usableFromInline
    static func servingFailed(_ role: Role, _ error: any Error) -> Int32 {
        if role.reportsStatus {
            DeviceStatusRecord(.servingFailed, "\(error)").send(on: InheritedDescriptor.liveness)
        }
        if let error = error as? VirtqueueError, error.isPeerViolation || error.cause != nil {
            return fail(ExitCode.dataError, "\(role.deviceName): the driver broke the ring: \(error)")
        }
        return fail(ExitCode.deviceFailed, "\(role.deviceName): \(error)")
    }

    static func parse(_ arguments: [String]) -> Result<Role, SharedMemoryError> {
        func value(after flag: String) -> String? {
            guard let index = arguments.firstIndex(of: flag), index + 1 < arguments.count else { return nil }
            return arguments[index + 1]
        }
        guard let name = value(after: deviceArgument) else {
            return .failure(SharedMemoryError(.invalidArgument, "\(deviceArgument) needs a device name"))
        }
        var role = Role(deviceName: name)
        for (position, argument) in arguments.enumerated() where argument == queueArgument {
            guard position + 1 < arguments.count, let queue = parseQueue(arguments[position + 1]) else {
                return .failure(
                    SharedMemoryError(.invalidArgument, "\(queueArgument) needs INDEX or INDEX:KICK:CALL")
                )
            }
            role.queues.append(queue)
        }
        if role.queues.isEmpty { role.queues = [(0, InheritedDescriptor.kick, InheritedDescriptor.call)] }
        do {
            try RegionLayout.validateServedQueues(role.queues.map(\.index))
        } catch {
            return .failure(SharedMemoryError(.invalidArgument, error.message))
        }
        var seen: Set<CInt> = [InheritedDescriptor.region, InheritedDescriptor.liveness]
        for queue in role.queues {
            for fd in [queue.kick, queue.call] {
                guard fd > 2, seen.insert(fd).inserted else {
                    return .failure(
                        SharedMemoryError(
                            .invalidArgument,
                            "queue \(queue.index): descriptor \(fd) is a standard one, the region's, the liveness socket's or another queue's"
                        )
                    )
                }
            }
        }
        let firstConfigured = (seen.max() ?? InheritedDescriptor.liveness) + 1
        if arguments.contains(spinsArgument) {
            guard let text = value(after: spinsArgument), let spins = Int(text), spins >= 0 else {
                return .failure(SharedMemoryError(.invalidArgument, "\(spinsArgument) needs a spin count"))
            }
            role.spins = spins
        }
        role.requireSeals = !arguments.contains(unsealedArgument)
        for (index, argument) in arguments.enumerated() where argument == configurationArgument {
            guard index + 1 < arguments.count else {
                return .failure(SharedMemoryError(.invalidArgument, "\(configurationArgument) needs a value"))
            }
            role.configuration.arguments.append(arguments[index + 1])
        }
        if arguments.contains(descriptorsArgument) {
            guard let text = value(after: descriptorsArgument), let count = Int(text),
                (0...maximumConfiguredDescriptors).contains(count)
            else {
                return .failure(SharedMemoryError(.invalidArgument, "\(descriptorsArgument) needs a count up to 12"))
            }
            role.configuration.fileDescriptors = (0..<count).map { firstConfigured + CInt($0) }
        }
        return .success(role)
    }

    /// `INDEX` or `INDEX:KICK:CALL`, each a non-negative decimal number in range.
    static func parseQueue(_ text: String) -> (index: Int, kick: CInt, call: CInt)? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 3, let index = Int(parts[0]), (0...Int(UInt16.max)).contains(index)
        else { return nil }
        guard parts.count == 3 else { return (index, InheritedDescriptor.kick, InheritedDescriptor.call) }
        guard let kick = CInt(parts[1]), let call = CInt(parts[2]), (0...1024).contains(kick), (0...1024).contains(call)
        else { return nil }
        return (index, kick, call)
    }

    static func fail(_ code: Int32, _ message: String) -> Int32 {
        let line = "virtqueue device: \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        return code
    }
}
