/// A device: the component on the far side of a queue that serves the driver's requests.
///
/// Write the device logic once, against this protocol, and run it at any isolation level: on a
/// thread of the driver's process (the heap backend), in a child process over shared memory,
/// or in a seccomp-confined child. The backends call ``DeviceQueue/serve(_:spins:)``, which
/// takes requests, hands each to ``handle(_:on:)``, completes it with the bytes written, and
/// notifies the driver once per batch.
///
/// ```swift
/// struct Uppercase: DeviceComponent {
///     static let name = "uppercase"
///     init(configuration: DeviceConfiguration) {}
///     mutating func handle<M: GuestMemory & ~Copyable, N: Notifier>(
///         _ request: borrowing DeviceRequest,
///         on queue: borrowing DeviceQueue<M, N>
///     ) throws -> Int {
///         var text = [UInt8](repeating: 0, count: request.readableByteCount)
///         _ = try text.withUnsafeMutableBytes { try queue.gather(request, into: $0) }
///         let reply = text.map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 }
///         return try reply.withUnsafeBytes { try queue.scatter($0, into: request) }
///     }
/// }
/// ```
public protocol DeviceComponent: SendableMetatype {
    /// A stable name, used to pick the device when a host process is started in a device role.
    static var name: String { get }

    /// The features the device implements; the default is everything this library supports.
    static var supportedFeatures: Features { get }

    /// Whether ``handle(_:on:)`` always returns promptly: it computes on the request's bytes and
    /// waits on nothing — no I/O, no lock another party holds, no other process. `false` unless
    /// a device says so.
    ///
    /// ``DeviceQueue/serve(_:spins:)`` then stages its completions and publishes `used.idx` once
    /// per run (every 16 completions and at the end of each batch,
    /// ``DeviceQueue/complete(_:written:publish:)``), so the driver's CPU fetches the index once
    /// per run instead of once per request. A device that may block in `handle` keeps the
    /// default: each completion is published as it is made, so a request that stalls never
    /// holds back the ones finished before it.
    static var completesWithoutBlocking: Bool { get }

    /// Creates the device from what its launcher handed over: its arguments and the file
    /// descriptors it needs (a disk image's, say). This is the device's factory, and the only
    /// way a backend creates one.
    ///
    /// Backends pass the same values at every isolation level: on a thread the descriptors keep
    /// their numbers; a child process receives them under new numbers, which `configuration`
    /// reports. A child process calls this after it has attached to the region (and, when
    /// sandboxed, after its seccomp filter is loaded). A device that needs nothing ignores
    /// `configuration`:
    ///
    /// ```swift
    /// init(configuration: DeviceConfiguration) {}
    /// ```
    ///
    /// - Throws: A configuration the device cannot work with (a missing descriptor, a bad
    ///   argument). The device then never serves, and its launcher reports the error when it
    ///   launches it, naming the device.
    init(configuration: DeviceConfiguration) throws

    /// Serves one request: reads its device-readable segments, writes its reply into the
    /// device-writable ones, and returns the number of bytes written.
    ///
    /// - Throws: Any error ends ``DeviceQueue/serve(_:spins:)`` with that error; the request is
    ///   completed with 0 bytes first, so the driver gets its buffers back.
    ///
    /// A device that serves several queues learns which one `request` came from in
    /// `queue.queueIndex` (``DeviceQueue/queueIndex``).
    mutating func handle<M: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<M, N>
    ) throws -> Int

    /// What the device values of one device share when it serves several queues — one value
    /// per queue, each on its own thread: a network device's loopback between its transmit and
    /// receive queues, a block device's statistics. `Void` (the default) for nothing.
    ///
    /// A launcher given several queues (`HeapBackend.launch(_:layout:queues:spins:configuration:)`,
    /// and the `queues` of the process launchers' `LaunchOptions`) makes the shared state once
    /// with ``makeSharedState(configuration:)``, then one device value per queue with
    /// ``init(configuration:queue:shared:)``, and serves each queue on a thread of its own. A
    /// device that serves one queue ignores all three.
    associatedtype SharedState: Sendable = Void

    /// Creates the state the queues of one device share, once, before any of its device values.
    ///
    /// - Throws: Anything: the device does not start, and its launcher reports the error.
    static func makeSharedState(configuration: DeviceConfiguration) throws -> SharedState

    /// Creates the device value that serves queue `queue`. The default calls
    /// ``init(configuration:)``.
    ///
    /// - Parameters:
    ///   - configuration: As for ``init(configuration:)``.
    ///   - queue: The index of the queue this value serves (in the region, or the vhost-user ring).
    ///   - shared: What ``makeSharedState(configuration:)`` made for the device.
    /// - Throws: Anything: the device does not start, and its launcher reports the error.
    init(configuration: DeviceConfiguration, queue: Int, shared: SharedState) throws
}

extension DeviceComponent {
    public static var supportedFeatures: Features { .all }
    /// A device may block in `handle` unless it says otherwise.
    public static var completesWithoutBlocking: Bool { false }

    public init(configuration: DeviceConfiguration, queue: Int, shared: SharedState) throws {
        try self.init(configuration: configuration)
    }
}

extension DeviceComponent where SharedState == Void {
    public static func makeSharedState(configuration: DeviceConfiguration) throws {}
}

/// What a launcher hands a device besides its queue: arguments and open file descriptors.
public struct DeviceConfiguration: Hashable, Sendable {
    /// Device-specific arguments.
    public var arguments: [String]
    /// File descriptors the device may use, in the order the launcher passed them, numbered as
    /// the device's process sees them.
    public var fileDescriptors: [Int32]

    /// Creates a configuration.
    public init(arguments: [String] = [], fileDescriptors: [Int32] = []) {
        self.arguments = arguments
        self.fileDescriptors = fileDescriptors
    }
}

extension DeviceQueue where Memory: ~Copyable {
    /// Runs `device` until the driver goes away: waits for requests, serves every available one,
    /// completes it, and notifies the driver — when it asked to be notified — after every 16
    /// completions and at the end of each batch. For a device whose `handle` never blocks
    /// (``DeviceComponent/completesWithoutBlocking``) completions are staged and `used.idx` is
    /// published at those points too (``complete(_:written:publish:)``), so the driver's CPU
    /// fetches it once per run rather than once per request; any other device's completions are
    /// published one by one.
    ///
    /// Returns normally when the driver closes its end (the notifier reports
    /// ``VirtqueueError/Code-swift.struct/peerDied`` while the device waits or notifies).
    ///
    /// - Parameters:
    ///   - device: The device logic.
    ///   - spins: How long to poll before sleeping; see ``waitForRequests(spins:)``.
    /// - Throws: A ``VirtqueueError`` for a ring violation, or whatever `device` throws.
    @inlinable
    public mutating func serve<Device: DeviceComponent>(_ device: inout Device, spins: Int = 256) throws {
        try serve(&device, spins: spins, until: { false })
    }

    /// Runs `device` as ``serve(_:spins:)`` does, and also returns once `shouldStop` says so:
    /// it is asked before each wait and before each request, so the request in hand is always
    /// completed first and the queue's ``cursor`` then has nothing in flight. A device that
    /// serves a ring someone else controls (vhost-user's `GET_VRING_BASE`) stops this way even
    /// while the driver keeps the ring full.
    ///
    /// - Parameters:
    ///   - device: The device logic.
    ///   - spins: How long to poll before sleeping; see ``waitForRequests(spins:)``.
    ///   - shouldStop: Whether to return now. Make the notifier's wait end too (a spurious
    ///     wake-up is enough) when it turns `true`, so an idle loop sees it.
    /// - Throws: A ``VirtqueueError`` for a ring violation, or whatever `device` throws.
    @inlinable
    public mutating func serve<Device: DeviceComponent>(
        _ device: inout Device,
        spins: Int = 256,
        until shouldStop: () -> Bool
    ) throws {
        var journal = NoRequestJournal()
        try serve(&device, spins: spins, journal: &journal, until: shouldStop)
    }

    /// Runs `device` as ``serve(_:spins:until:)`` does, telling `journal` about each request
    /// as it is taken and as it is returned, so that a device started after this one died can
    /// finish what it had taken (vhost-user's inflight tracking).
    ///
    /// - Parameters:
    ///   - device: The device logic.
    ///   - spins: How long to poll before sleeping; see ``waitForRequests(spins:)``.
    ///   - journal: Where taken and returned requests are recorded.
    ///   - shouldStop: Whether to return now; see ``serve(_:spins:until:)``.
    /// - Throws: A ``VirtqueueError`` for a ring violation, or whatever `device` throws.
    @inlinable
    public mutating func serve<Device: DeviceComponent, Journal: RequestJournal>(
        _ device: inout Device,
        spins: Int = 256,
        journal: inout Journal,
        until shouldStop: () -> Bool
    ) throws {
        while !shouldStop(), try waitForRequestsUnlessDriverGone(spins: spins) {
            // Notify at the end of each batch, and every `notifyInterval` completions within a
            // long one, so a driver that went to sleep hears about finished requests while the
            // device is still busy with later ones (a slow `handle` — disk I/O, say — would
            // otherwise hold back every completion of its batch).
            var completed = 0
            while !shouldStop(), let request = try nextRequest() {
                journal.taken(head: request.id)
                try serve(request, with: &device, journal: &journal)
                completed &+= 1
                if completed == Self.notifyInterval {
                    completed = 0
                    guard try notifyUnlessDriverGone() else { return }
                }
            }
            guard try notifyUnlessDriverGone() else { return }
        }
    }

    /// Serves the chains a previous device took and never completed, in the order given (the
    /// order it took them), before anything new: each is taken again with
    /// ``resubmittedRequest(head:)``, handed to `device` and completed; the driver is notified
    /// at the end.
    ///
    /// - Parameters:
    ///   - heads: The heads of the chains in flight, oldest first.
    ///   - device: The device logic.
    ///   - journal: Where returned requests are recorded (they were recorded as taken before).
    /// - Throws: A ``VirtqueueError`` for a resubmission the ring does not bear out, or whatever
    ///   `device` throws.
    public mutating func serveResubmitted<Device: DeviceComponent, Journal: RequestJournal>(
        _ heads: [UInt16],
        with device: inout Device,
        journal: inout Journal
    ) throws {
        guard !heads.isEmpty else { return }
        for head in heads {
            try serve(try resubmittedRequest(head: head), with: &device, journal: &journal)
        }
        try notifyIfNeeded()
    }

    /// Completions after which ``serve(_:spins:)`` checks, within a batch, whether the driver
    /// wants to be notified (a fence and a load of its event index or flags).
    @inlinable
    static var notifyInterval: Int { 16 }

    /// Waits for requests; `false` when the driver has gone.
    @inlinable
    mutating func waitForRequestsUnlessDriverGone(spins: Int) throws(VirtqueueError) -> Bool {
        do {
            try waitForRequests(spins: spins)
            return true
        } catch {
            if error.code == .peerDied { return false }
            throw error
        }
    }

    /// Notifies the driver if it asked to be; `false` when the driver has gone.
    @inlinable
    mutating func notifyUnlessDriverGone() throws(VirtqueueError) -> Bool {
        do {
            try notifyIfNeeded()
            return true
        } catch {
            if error.code == .peerDied { return false }
            throw error
        }
    }

    /// Hands `request` to `device` and completes it with the bytes written (0 if the device
    /// threw, so the driver gets its buffers back), telling `journal` before and after. Inlined
    /// into the serve loop: the request stays in registers, and no frame is set up per request.
    @inlinable @inline(__always)
    mutating func serve<Device: DeviceComponent, Journal: RequestJournal>(
        _ request: consuming DeviceRequest,
        with device: inout Device,
        journal: inout Journal
    ) throws {
        var written = 0
        var failure: (any Error)?
        do {
            written = try device.handle(request, on: self)
        } catch {
            failure = error
        }
        let head = request.id
        journal.completing(head: head)
        try complete(
            request,
            written: failure == nil ? written : 0,
            publish: !Device.completesWithoutBlocking || Journal.needsEachCompletionPublished
        )
        journal.completed(head: head, usedIndex: cursor.nextUsed)
        if let failure {
            _ = try? notifyIfNeeded()
            throw failure
        }
    }
}

/// Where a device records the requests it takes and returns, so that a device started after it
/// died can finish them: ``DeviceQueue/serve(_:spins:journal:until:)`` calls it around every
/// request. vhost-user's inflight region (`INFLIGHT_SHMFD`) is one.
///
/// The calls come in order for each request: ``taken(head:)`` once it is taken, before the
/// device handles it; ``completing(head:)`` just before its used element and `used.idx` are
/// written; ``completed(head:usedIndex:)`` once they are published.
public protocol RequestJournal {
    /// The chain at `head` was taken and is about to be handled.
    mutating func taken(head: UInt16)
    /// The chain at `head` is about to be returned through the used ring.
    mutating func completing(head: UInt16)
    /// The chain at `head` was returned; `used.idx` is now `usedIndex`.
    mutating func completed(head: UInt16, usedIndex: UInt16)
    /// Whether ``DeviceQueue/serve(_:spins:journal:until:)`` must publish `used.idx` after each
    /// completion, before ``completed(head:usedIndex:)`` — `true` unless a journal says
    /// otherwise. With `false`, a device that never blocks
    /// (``DeviceComponent/completesWithoutBlocking``) has its completions staged and published
    /// once per run (``DeviceQueue/complete(_:written:publish:)``), so `usedIndex` may not be
    /// published yet.
    static var needsEachCompletionPublished: Bool { get }
}

extension RequestJournal {
    /// A journal relies on `used.idx` being published when it hears of a completion.
    @inlinable public static var needsEachCompletionPublished: Bool { true }
}

/// The journal of a device that records nothing: what ``DeviceQueue/serve(_:spins:until:)``
/// uses; it compiles to nothing.
public struct NoRequestJournal: RequestJournal {
    /// Creates the empty journal.
    @inlinable public init() {}
    @inlinable public mutating func taken(head: UInt16) {}
    @inlinable public mutating func completing(head: UInt16) {}
    @inlinable public mutating func completed(head: UInt16, usedIndex: UInt16) {}
    /// Nothing is recorded, so completions are staged and published once per run.
    @inlinable public static var needsEachCompletionPublished: Bool { false }
}
