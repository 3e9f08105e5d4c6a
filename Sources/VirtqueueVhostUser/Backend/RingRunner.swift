import CVirtqueueSystem
import Glibc
import Synchronization
import SystemPackage
import Virtqueue
import VirtqueueSharedMemory

/// The device queue of a vhost-user back-end.
typealias VhostUserDeviceQueue = DeviceQueue<VhostUserMemory, VhostUserEventNotifier>

/// One running ring: a thread that serves a ``DeviceQueue`` with a device, until it is asked to
/// stop, the connection ends or the ring breaks; then it stops the queue and reports the cursor.
final class RingRunner<Device: VhostUserDevice>: @unchecked Sendable {
    /// How the thread ended.
    struct Outcome {
        /// Where the ring stands.
        var cursor: QueueCursor
        /// The ring's format, which says how the cursor is encoded.
        var format: RingFormat
        /// The requests completed in this run.
        var completed: Int
        /// The device, handed back for the next start of this ring.
        var device: Device
        /// Why the ring ended, if not because it was asked to stop.
        var failure: (any Error)?
    }

    let index: Int
    /// Where the ring started this run.
    let startCursor: QueueCursor
    let format: RingFormat
    let notifier: VhostUserEventNotifier
    /// The SET_VRING_ERR eventfd, signalled when the ring breaks.
    let errorTarget: Mutex<VhostUserFileDescriptor?>
    private let stopRequested = Atomic<Bool>(false)
    /// Written once by the thread before it signals `done`, under `lock`.
    private var outcome: Outcome?
    private let lock = Mutex<Void>(())
    /// Signalled when the thread has ended (an eventfd, so the session can wait with a timeout).
    private let done: CInt

    private init(
        index: Int,
        startCursor: QueueCursor,
        format: RingFormat,
        notifier: VhostUserEventNotifier,
        error: VhostUserFileDescriptor?,
        done: CInt
    ) {
        self.index = index
        self.startCursor = startCursor
        self.format = format
        self.notifier = notifier
        self.errorTarget = Mutex(error)
        self.done = done
    }

    deinit {
        _ = Glibc.close(done)
    }

    /// Starts a thread serving `queue` with `device`.
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/deviceFailed`` if the thread cannot be started.
    static func start(
        index: Int,
        startCursor: QueueCursor,
        format: RingFormat,
        queue: consuming VhostUserDeviceQueue,
        device: Device,
        error: VhostUserFileDescriptor?,
        journal: InflightQueue? = nil,
        resubmit: [UInt16] = [],
        spins: Int,
        log: @escaping VhostUserLogSink
    ) throws(VhostUserError) -> RingRunner {
        let done = vq_eventfd()
        guard done >= 0 else { throw .system("eventfd", Errno(rawValue: errno)) }
        let runner = RingRunner(
            index: index,
            startCursor: startCursor,
            format: format,
            notifier: queue.notifier,
            error: error,
            done: done
        )
        let handoff = Handoff(queue: queue, device: device)
        do {
            let thread = try startJoinableThread {
                guard let queue = handoff.takeQueue(), let device = handoff.takeDevice() else { return }
                runner.run(queue, device, journal: journal, resubmit: resubmit, spins: spins, log: log)
            }
            thread.detach()
        } catch {
            throw VhostUserError(.deviceFailed, "queue \(index): could not start its thread", underlyingError: error)
        }
        return runner
    }

    /// Replaces the SET_VRING_ERR eventfd while the ring runs.
    func replaceErrorTarget(_ target: VhostUserFileDescriptor?) {
        errorTarget.withLock { $0 = target }
    }

    /// Whether the thread has ended.
    var hasEnded: Bool {
        var entry = pollfd(fd: done, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) > 0
    }

    /// Asks the thread to stop (it finishes the request it is serving) and waits up to `timeout`.
    ///
    /// - Returns: How the thread ended, or `nil` if it did not end in time.
    func stop(timeout: Duration) -> Outcome? {
        stopRequested.store(true, ordering: .relaxed)
        notifier.close()
        var entry = pollfd(fd: done, events: Int16(POLLIN), revents: 0)
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            let left = ContinuousClock.now.duration(to: deadline)
            let milliseconds = max(
                left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000,
                0
            )
            let ready = poll(&entry, 1, CInt(min(milliseconds, Int64(Int32.max))))
            if ready > 0 { break }
            if ready == 0 { return nil }
            if Errno(rawValue: errno) != .interrupted { return nil }
        }
        return lock.withLock { _ in outcome.take() }
    }

    // MARK: The thread

    private func run(
        _ queue: consuming VhostUserDeviceQueue,
        _ device: Device,
        journal: InflightQueue?,
        resubmit: [UInt16],
        spins: Int,
        log: VhostUserLogSink
    ) {
        var device = device
        var failure: (any Error)?
        var completed = 0
        do {
            try serve(&queue, &device, journal: journal, resubmit: resubmit, spins: spins, completed: &completed)
        } catch {
            failure = error
            // A ring violation is the front-end's doing; anything else (the device threw, the
            // notifier failed) is ours.
            let code: VhostUserError.Code =
                (error as? VirtqueueError)?.isPeerViolation == true ? .invalidRing : .deviceFailed
            log(
                VhostUserLogRecord(
                    level: .error,
                    "the ring stopped",
                    error: VhostUserError(code, "queue \(index) broke: \(error)"),
                    queue: index
                )
            )
            if let target = errorTarget.withLock({ $0 }), let fd = target.fileDescriptor {
                _ = vq_eventfd_signal(fd.rawValue)
            }
        }
        let cursor = (try? queue.stop()) ?? queue.cursor
        let ended = Outcome(cursor: cursor, format: format, completed: completed, device: device, failure: failure)
        lock.withLock { _ in outcome = ended }
        _ = vq_eventfd_signal(done)
    }

    /// ``DeviceQueue/serve(_:spins:until:)``, stopping when the ring was asked to stop: checked
    /// between requests as well as when the ring runs dry, so a front-end that keeps the ring full
    /// cannot hold GET_VRING_BASE off for ever. The request being served is completed first, so
    /// the cursor the thread reports has nothing in flight.
    ///
    /// With an inflight journal, the requests a previous back-end left in flight are served
    /// first, and every request is recorded as it is taken and returned. `completed` counts the
    /// requests returned (in either ring format; a packed ring's positions count descriptors).
    private func serve(
        _ queue: inout VhostUserDeviceQueue,
        _ device: inout Device,
        journal: InflightQueue?,
        resubmit: [UInt16],
        spins: Int,
        completed: inout Int
    ) throws {
        let stop = { self.stopRequested.load(ordering: .relaxed) }
        guard let journal else {
            var counted = CountingJournal(NoRequestJournal())
            defer { completed = counted.count }
            try device.serve(&queue, spins: spins, journal: &counted, until: stop)
            return
        }
        var counted = CountingJournal(journal)
        defer { completed = counted.count }
        try queue.serveResubmitted(resubmit, with: &device, journal: &counted)
        try device.serve(&queue, spins: spins, journal: &counted, until: stop)
    }

    /// A journal that counts the requests returned and passes every call on to `inner`.
    struct CountingJournal<Inner: RequestJournal>: RequestJournal {
        var inner: Inner
        var count = 0

        init(_ inner: Inner) { self.inner = inner }

        static var needsEachCompletionPublished: Bool { Inner.needsEachCompletionPublished }

        mutating func taken(head: UInt16) { inner.taken(head: head) }

        mutating func completing(head: UInt16) {
            count &+= 1
            inner.completing(head: head)
        }

        mutating func completed(head: UInt16, usedIndex: UInt16) { inner.completed(head: head, usedIndex: usedIndex) }
    }

    /// Carries the (non-copyable) queue and the device into the thread, once.
    private final class Handoff: @unchecked Sendable {
        private var queue: VhostUserDeviceQueue?
        private var device: Device?

        init(queue: consuming VhostUserDeviceQueue, device: Device) {
            self.queue = consume queue
            self.device = device
        }

        func takeQueue() -> VhostUserDeviceQueue? { queue.take() }

        func takeDevice() -> Device? { device.take() }
    }
}
