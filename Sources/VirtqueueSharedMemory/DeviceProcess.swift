import CVirtqueueSystem
public import Glibc
import Synchronization
import SystemPackage
public import Virtqueue

/// A device running in a child process: the driver's handle to it.
///
/// Build the driver's queue with `makeDriverQueue(bufferSize:poolRange:indirectThreshold:)` (or
/// from ``makeRegion()`` and ``notifier``). The notifier watches the child through a pidfd, so a
/// driver waiting for used buffers learns of the child's death at once
/// (`VirtqueueError/Code/peerDied`), can take back every chain in flight with
/// `DriverQueue/takeAbandoned()`, and can learn why with `explain(_:)` or ``failure()``.
///
/// End the child with ``stop(gracePeriod:)`` (hang up, let it exit, kill it if it does not,
/// reap it), which says how it ended as a `DeviceTermination`; or with ``kill(signal:)``
/// followed by ``waitForExit()`` for its raw ``ExitStatus``. If the handle goes away first, its
/// `deinit` stops the child: no child outlives its handle as a zombie.
public final class DeviceProcess: DeviceHandle {
    /// The child's process id. After the child is reaped the id may be reused: use ``kill(signal:)``,
    /// which goes through a pidfd, rather than `kill(2)` on this number.
    public let processID: Int32
    /// The `DeviceComponent/name` of the device the child runs.
    public let deviceName: String
    /// The queues the child serves, in the order it was given them.
    public let queueIndices: [Int]
    /// The region file the child maps.
    public let file: SharedMemoryFile
    /// The driver's notifiers, one per queue in the order of ``queueIndices``: each kicks the
    /// child, waits for its calls on that queue, and reports its death.
    public let notifiers: [EventNotifier]
    /// Where the child runs: `DeviceLocation/process(id:)`, or
    /// `DeviceLocation/sandboxedProcess(id:)` when the sandboxed level started it.
    public let location: DeviceLocation
    let pidfd: CInt
    let defaultGracePeriod: Duration
    /// The parent's end of the liveness socket: shut down for writing to hang up, closed in
    /// `deinit`, so what the child wrote can be read after it has exited.
    let livenessSocket: CInt
    /// How the child ended, once reaped. The lock also serialises reaping.
    let reaped: Mutex<Ending?>
    let isReaped = Atomic<Bool>(false)
    /// Reads a termination from the exit status and the child's messages before the generic
    /// reading does (the sandboxed level's: a SIGSYS record names a forbidden call).
    let interpreter: Interpreter?

    /// Reads a child's ending as a termination, or `nil` to leave it to the generic reading.
    package typealias Interpreter = @Sendable (_ status: ExitStatus, _ messages: [[UInt8]]) -> DeviceTermination?

    /// How the child ended: its raw status, and the termination read from it and from what the
    /// child had left on the liveness socket.
    struct Ending: Sendable {
        var status: ExitStatus
        var termination: DeviceTermination
    }

    init(
        processID: pid_t,
        pidfd: CInt,
        livenessSocket: CInt,
        deviceName: String,
        queueIndices: [Int],
        file: SharedMemoryFile,
        notifiers: [EventNotifier],
        stopGracePeriod: Duration,
        interpreter: Interpreter?
    ) {
        self.processID = processID
        self.pidfd = pidfd
        self.livenessSocket = livenessSocket
        self.deviceName = deviceName
        self.queueIndices = queueIndices
        self.file = file
        self.notifiers = notifiers
        self.defaultGracePeriod = stopGracePeriod
        self.interpreter = interpreter
        self.location = interpreter == nil ? .process(id: processID) : .sandboxedProcess(id: processID)
        self.reaped = Mutex(nil)
    }

    deinit {
        if reaped.withLock({ $0 }) == nil {
            stop(gracePeriod: defaultGracePeriod)
        }
        closeDescriptor(pidfd)
        closeDescriptor(livenessSocket)
    }

    /// The first queue the child serves.
    public var queueIndex: Int { queueIndices[0] }

    /// The driver's notifier of the first queue.
    public var notifier: EventNotifier { notifiers[0] }

    /// The driver's notifier of queue `index`, or `nil` if the child does not serve it.
    public func notifier(forQueue index: Int) -> EventNotifier? {
        queueIndices.firstIndex(of: index).map { notifiers[$0] }
    }

    /// Maps the region the child serves, for the driver's queue.
    ///
    /// - Throws: ``SharedMemoryError`` if `mmap` fails.
    public func makeRegion() throws(SharedMemoryError) -> SharedMemoryRegion {
        try file.map()
    }

    /// Hangs up the liveness socket: the child's next wait for requests ends, `DeviceQueue/serve(_:spins:)`
    /// returns and the child exits. Does not wait.
    public func hangUp() {
        _ = shutdown(livenessSocket, CInt(SHUT_WR))
    }

    /// Stops the child with the grace period it was launched with; see ``stop(gracePeriod:)``.
    @discardableResult
    public func stop() -> DeviceTermination {
        stop(gracePeriod: nil)
    }

    /// Stops the child: hangs up, waits up to `gracePeriod` for it to exit, kills it with
    /// `SIGKILL` if it has not, reaps it, and says how it ended. Calling it again returns the
    /// same termination.
    ///
    /// - Parameter gracePeriod: How long the child may take to finish; `nil` for the
    ///   ``LaunchOptions/stopGracePeriod`` it was launched with.
    /// - Returns: How the child ended: `DeviceTermination/finished` when it served until
    ///   the hang-up; `DeviceTermination/signaled(_:)` with `SIGKILL` when it had to be
    ///   killed; otherwise what it did before (``failure()`` names it).
    @discardableResult
    public func stop(gracePeriod: Duration?) -> DeviceTermination {
        if let ending = reaped.withLock({ $0 }) { return ending.termination }
        hangUp()
        let exited = (try? waitForExitEvent(timeout: gracePeriod ?? defaultGracePeriod)) ?? false
        if !exited { try? kill(signal: SIGKILL) }
        return reap(blocking: true)?.termination ?? .unknown("the process could not be waited for")
    }

    /// Why the child died, if it has: a `DeviceFailure` naming the device, its process and the
    /// cause — the error it reported, its exit code, or the signal that killed it. `nil` while it
    /// runs and when it served until it was stopped.
    ///
    /// A child that is ending (it has closed its end of the liveness socket, as a process that
    /// exits does) is waited for, up to the stop grace period; a running one is not.
    public func failure() -> DeviceFailure? {
        guard let ending = endingIfEnded(), ending.termination != .finished else { return nil }
        return DeviceFailure(deviceName: deviceName, location: location, termination: ending.termination)
    }

    /// Sends `signal` to the child (through its pidfd where the kernel has them, so a reused
    /// process id is never hit). Does nothing once the child is reaped.
    ///
    /// - Throws: ``SharedMemoryError`` if the signal cannot be sent.
    public func kill(signal: CInt = SIGKILL) throws(SharedMemoryError) {
        // A pidfd names this process and no other, reaped or not; without one, a reaped
        // process id could belong to someone else by now.
        if pidfd < 0 && isReaped.load(ordering: .acquiring) { return }
        let result = pidfd >= 0 ? vq_pidfd_send_signal(pidfd, signal) : Glibc.kill(processID, signal)
        if result != 0 {
            let error = Errno.current
            if error == .noSuchProcess { return }
            throw .system("kill", error)
        }
    }

    /// Blocks until the child exits, reaps it and returns its raw exit status.
    ///
    /// - Throws: ``SharedMemoryError`` if `waitpid` fails.
    @discardableResult
    public func waitForExit() throws(SharedMemoryError) -> ExitStatus {
        guard let status = try reapOrThrow(blocking: true)?.status else {
            throw SharedMemoryError(.systemCallFailed, "the exit status of \(deviceName) (pid \(processID)) is unknown")
        }
        return status
    }

    /// The child's raw exit status, reaping it if it has exited; `nil` while it runs.
    ///
    /// - Throws: ``SharedMemoryError`` if `waitpid` fails.
    public func exitStatus() throws(SharedMemoryError) -> ExitStatus? {
        try reapOrThrow(blocking: false)?.status
    }

    /// How the child ended, if it has: reaps it without waiting, and waits (up to the grace
    /// period) for one that is ending.
    func endingIfEnded() -> Ending? {
        if let ending = reap(blocking: false) { return ending }
        guard childIsEnding() else { return nil }
        guard (try? waitForExitEvent(timeout: defaultGracePeriod)) == true else { return nil }
        return reap(blocking: true)
    }

    /// Whether the child has closed its end of the liveness socket or of a notification channel,
    /// as a process that exits does before it can be reaped: what the driver's notifier reports
    /// as `peerDied` may come a moment before the exit status.
    func childIsEnding() -> Bool {
        var entries = ([livenessSocket] + notifiers.flatMap { [$0.channel.waitFD, $0.channel.notifyFD] }).map {
            pollfd(fd: $0, events: Int16(VQ_POLLRDHUP), revents: 0)
        }
        guard poll(&entries, nfds_t(entries.count), 0) > 0 else { return false }
        return entries.contains { $0.revents & Int16(POLLHUP | VQ_POLLRDHUP) != 0 }
    }

    /// Reaps the child (waiting for it if `blocking`) and reads its ending; `nil` while it runs
    /// or if `waitpid` failed.
    func reap(blocking: Bool) -> Ending? {
        (try? reapOrThrow(blocking: blocking)) ?? nil
    }

    /// Reaps the child (waiting for it if `blocking`): reads what it left on the liveness
    /// socket, and its termination from both. `nil` while it runs.
    func reapOrThrow(blocking: Bool) throws(SharedMemoryError) -> Ending? {
        try reaped.withLock { (reaped) throws(SharedMemoryError) -> Ending? in
            if let reaped { return reaped }
            var status: CInt = 0
            let pid = try retrying("waitpid") { waitpid(processID, &status, blocking ? 0 : WNOHANG) }
            guard pid == processID else { return nil }
            let exitStatus = ExitStatus(waitStatus: status)
            let messages = pendingMessages()
            let termination =
                interpreter?(exitStatus, messages) ?? Self.termination(of: exitStatus, messages: messages)
            let result = Ending(status: exitStatus, termination: termination)
            reaped = result
            isReaped.store(true, ordering: .releasing)
            return result
        }
    }

    /// Everything the child wrote that has not been read: one entry per message.
    func pendingMessages() -> [[UInt8]] {
        var messages: [[UInt8]] = []
        // A bound, so that a child that filled its socket buffer cannot keep us reading.
        while messages.count < 64 {
            let message = readLivenessMessage(maxByteCount: DeviceStatusRecord.maximumByteCount)
            if message.isEmpty { break }
            messages.append(message)
        }
        return messages
    }

    /// The generic reading of how a device process ended: exit 0 is a clean end; the device
    /// host's error codes with a status record are the error it described; anything else is
    /// its exit code or signal.
    static func termination(of status: ExitStatus, messages: [[UInt8]]) -> DeviceTermination {
        switch status {
        case .exited(DeviceHost.ExitCode.success):
            return .finished
        case .exited(let code):
            // The last record the child sent says what went wrong (a "started" one says nothing).
            for message in messages.reversed() {
                guard let record = DeviceStatusRecord(parsing: message) else { continue }
                switch record.kind {
                case .started: continue
                case .failedToStart: return .failedToStart(record.text)
                case .servingFailed: return .threw(record.text)
                }
            }
            return .exited(code)
        case .signaled(let signal):
            return .signaled(signal)
        }
    }

    /// Waits until the child has exited, up to `timeout`.
    func waitForExitEvent(timeout: Duration) throws(SharedMemoryError) -> Bool {
        if pidfd >= 0 {
            return try pollOne(pidfd, events: CInt(POLLIN), timeout: timeout) != 0
        }
        // No pidfd (a kernel before 5.3): poll waitpid, which reaps.
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try exitStatus() != nil { return true }
            usleep(10_000)
        }
        return false
    }
}
