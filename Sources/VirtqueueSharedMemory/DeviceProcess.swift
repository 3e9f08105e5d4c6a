import CVirtqueueSystem
public import Glibc
import Synchronization
import SystemPackage

/// A device running in a child process: the driver's handle to it.
///
/// Build the driver's queue from ``makeRegion()`` and ``notifier``. The notifier watches the
/// child through a pidfd, so a driver waiting for used buffers learns of the child's death at
/// once (`VirtqueueError/Code/peerDied`), and can take back every
/// chain in flight with `DriverQueue/takeAbandoned()`.
///
/// End the child with ``stop(gracePeriod:)`` (hang up, let it exit, reap it) or ``kill(signal:)``
/// followed by ``waitForExit()``. If the handle goes away first, its `deinit` does the same as
/// `stop`: no child outlives its handle as a zombie.
public final class DeviceProcess: Sendable {
    /// The child's process id. After the child is reaped the id may be reused: use ``kill(signal:)``,
    /// which goes through a pidfd, rather than `kill(2)` on this number.
    public let processID: Int32
    /// The `DeviceComponent/name` of the device the child runs.
    public let deviceName: String
    /// The queue the child serves.
    public let queueIndex: Int
    /// The region file the child maps.
    public let file: SharedMemoryFile
    /// The driver's notifier: kicks the child, waits for its calls, and reports its death.
    public let notifier: EventNotifier
    let pidfd: CInt
    let defaultGracePeriod: Duration
    /// The parent's end of the liveness socket; -1 once hung up.
    let hangUpSocket: Mutex<CInt>
    /// The exit status, once reaped. The lock also serialises reaping.
    let reaped: Mutex<ExitStatus?>
    let isReaped = Atomic<Bool>(false)

    init(
        processID: pid_t,
        pidfd: CInt,
        hangUpSocket: CInt,
        deviceName: String,
        queueIndex: Int,
        file: SharedMemoryFile,
        notifier: EventNotifier,
        stopGracePeriod: Duration
    ) {
        self.processID = processID
        self.pidfd = pidfd
        self.hangUpSocket = Mutex(hangUpSocket)
        self.deviceName = deviceName
        self.queueIndex = queueIndex
        self.file = file
        self.notifier = notifier
        self.defaultGracePeriod = stopGracePeriod
        self.reaped = Mutex(nil)
    }

    deinit {
        if reaped.withLock({ $0 }) == nil {
            _ = try? stop(gracePeriod: defaultGracePeriod)
        }
        closeDescriptor(pidfd)
        hangUp()
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
        hangUpSocket.withLock { fd in
            closeDescriptor(fd)
            fd = -1
        }
    }

    /// Stops the child: hangs up, waits up to `gracePeriod` for it to exit, kills it with
    /// `SIGKILL` if it has not, and reaps it. Calling it again returns the same status.
    ///
    /// - Parameter gracePeriod: How long the child may take to finish; `nil` for the
    ///   ``LaunchOptions/stopGracePeriod`` it was launched with.
    /// - Returns: How the child ended.
    /// - Throws: ``SharedMemoryError`` if waiting fails.
    @discardableResult
    public func stop(gracePeriod: Duration? = nil) throws(SharedMemoryError) -> ExitStatus {
        if let status = reaped.withLock({ $0 }) { return status }
        hangUp()
        if try !waitForExitEvent(timeout: gracePeriod ?? defaultGracePeriod) {
            try kill(signal: SIGKILL)
        }
        return try waitForExit()
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

    /// Blocks until the child exits, reaps it and returns how it ended.
    ///
    /// - Throws: ``SharedMemoryError`` if `waitpid` fails.
    @discardableResult
    public func waitForExit() throws(SharedMemoryError) -> ExitStatus {
        try reaped.withLock { (reaped) throws(SharedMemoryError) -> ExitStatus in
            if let reaped { return reaped }
            var status: CInt = 0
            try retrying("waitpid") { waitpid(processID, &status, 0) }
            let result = ExitStatus(waitStatus: status)
            reaped = result
            isReaped.store(true, ordering: .releasing)
            return result
        }
    }

    /// How the child ended, reaping it if it has; `nil` while it runs.
    ///
    /// - Throws: ``SharedMemoryError`` if `waitpid` fails.
    public func exitStatus() throws(SharedMemoryError) -> ExitStatus? {
        try reaped.withLock { (reaped) throws(SharedMemoryError) -> ExitStatus? in
            if let reaped { return reaped }
            var status: CInt = 0
            let pid = try retrying("waitpid") { waitpid(processID, &status, WNOHANG) }
            guard pid == processID else { return nil }
            let result = ExitStatus(waitStatus: status)
            reaped = result
            isReaped.store(true, ordering: .releasing)
            return result
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
