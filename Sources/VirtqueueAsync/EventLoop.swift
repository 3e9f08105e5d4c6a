import CVirtqueueSystem
import Glibc
import Synchronization
import SystemPackage
public import Virtqueue
import VirtqueueSharedMemory

/// A thread that sleeps in `epoll_wait(2)` for the queues that wait asynchronously, so that no
/// task blocks a thread of Swift's cooperative pool.
///
/// A queue registers its notifier's `ReadinessNotifier/readinessDescriptors` once
/// (``register(_:)``); each time it has to sleep, its task suspends and the loop resumes it when
/// a descriptor is readable. Registrations are one-shot (`EPOLLONESHOT`) and re-armed by each
/// wait, so a descriptor nobody waits on costs the loop nothing.
///
/// ``shared`` serves every queue that names no loop. A loop of your own ends with
/// ``shutdown()``, which joins its thread and closes its descriptors.
public final class EventLoop: Sendable {
    /// The epoll instance.
    let epoll: CInt
    /// An eventfd that wakes the thread to stop it.
    let wake: CInt
    /// The registered waiters by id (0 is the wake descriptor).
    let waiters = Mutex<[UInt64: Waiter]>([:])
    let nextID = Atomic<UInt64>(1)
    let thread = Mutex<StartedThread?>(nil)
    let isShutDown = Atomic<Bool>(false)
    /// Why the thread stopped on its own (`epoll_wait` failed), if it did.
    let failure = Mutex<VirtqueueError?>(nil)

    /// The loop shared by every queue that names no loop of its own, started on first use.
    ///
    /// - Throws: `VirtqueueError` with code `VirtqueueError/Code/notifierFailed`
    ///   if its descriptors or thread could not be created.
    public static var shared: EventLoop {
        get throws(VirtqueueError) { try sharedLoop.get() }
    }

    /// `loop`, or ``shared`` when it is `nil`.
    static func resolve(_ loop: EventLoop?) throws(VirtqueueError) -> EventLoop {
        if let loop { return loop }
        return try shared
    }

    private static let sharedLoop = Result { () throws(VirtqueueError) -> EventLoop in try EventLoop() }

    /// Starts a loop on a new thread.
    ///
    /// - Throws: `VirtqueueError` with code `VirtqueueError/Code/notifierFailed`
    ///   if `epoll_create1`, `eventfd` or `pthread_create` fails.
    public init() throws(VirtqueueError) {
        epoll = vq_epoll_create()
        guard epoll >= 0 else { throw systemError("epoll_create1") }
        wake = vq_eventfd()
        guard wake >= 0 else {
            let error = systemError("eventfd")
            _ = Glibc.close(epoll)
            throw error
        }
        guard vq_epoll_control(epoll, wake, VQ_EPOLLIN, 0, 0) == 0 else {
            let error = systemError("epoll_ctl")
            _ = Glibc.close(epoll)
            _ = Glibc.close(wake)
            throw error
        }
        let created: StartedThread
        do {
            created = try startJoinableThread { [self] in run() }
        } catch {
            _ = Glibc.close(epoll)
            _ = Glibc.close(wake)
            throw VirtqueueError(
                .notifierFailed,
                "pthread_create failed: errno \(error.rawValue)",
                underlyingErrno: error.rawValue
            )
        }
        created.setName(Self.threadName)
        thread.withLock { $0 = created }
    }

    /// The number of registrations alive.
    public var registrationCount: Int { waiters.withLock { $0.count } }

    /// Stops the loop: wakes every task sleeping in it (their waits then throw
    /// `VirtqueueError/Code/notifierFailed`), joins its thread and closes its
    /// descriptors. Later registrations and waits fail the same way. Calling it again does nothing.
    public func shutdown() {
        guard !isShutDown.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = vq_eventfd_signal(wake)
        if let running = thread.withLock({ $0.take() }) {
            running.join()
        }
        let stranded = waiters.withLock { waiters in
            defer { waiters.removeAll() }
            return Array(waiters.values)
        }
        for waiter in stranded { waiter.fire() }
        _ = Glibc.close(epoll)
        _ = Glibc.close(wake)
    }

    /// Registers `notifier`'s descriptors; the registration ends when the returned value goes away.
    ///
    /// - Throws: `VirtqueueError` with code `VirtqueueError/Code/notifierFailed`
    ///   if the loop was shut down or `epoll_ctl` refuses a descriptor (one already registered
    ///   with this loop, say).
    public func register(_ notifier: some ReadinessNotifier) throws(VirtqueueError) -> Readiness {
        guard !isShutDown.load(ordering: .acquiring) else { throw Self.shutDownError }
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let waiter = Waiter(id: id, descriptors: notifier.readinessDescriptors, loop: self)
        var added: [CInt] = []
        for descriptor in waiter.descriptors {
            // Added disarmed: each wait arms it (EPOLLONESHOT without EPOLLIN reports only a hang-up).
            guard vq_epoll_control(epoll, descriptor, VQ_EPOLLONESHOT, id, 0) == 0 else {
                let error = systemError("epoll_ctl(EPOLL_CTL_ADD) of descriptor \(descriptor)")
                for done in added { _ = vq_epoll_remove(epoll, done) }
                throw error
            }
            added.append(descriptor)
        }
        waiters.withLock { $0[id] = waiter }
        return Readiness(waiter: waiter, notifier: notifier)
    }

    func deregister(_ waiter: Waiter) {
        let removed = waiters.withLock { $0.removeValue(forKey: waiter.id) != nil }
        guard removed, !isShutDown.load(ordering: .acquiring) else { return }
        for descriptor in waiter.descriptors { _ = vq_epoll_remove(epoll, descriptor) }
    }

    /// Why no task can wait in this loop any more, or `nil` while it runs.
    var stoppedReason: VirtqueueError? {
        if isShutDown.load(ordering: .acquiring) { return Self.shutDownError }
        return failure.withLock { $0 }
    }

    func arm(_ waiter: Waiter) throws(VirtqueueError) {
        if let stoppedReason { throw stoppedReason }
        for descriptor in waiter.descriptors
        where vq_epoll_control(epoll, descriptor, VQ_EPOLLIN | VQ_EPOLLRDHUP | VQ_EPOLLONESHOT, waiter.id, 1) != 0 {
            throw systemError("epoll_ctl(EPOLL_CTL_MOD) of descriptor \(descriptor)")
        }
    }

    /// The name of every loop's thread (`/proc/self/task/*/comm`).
    public static let threadName = "vq-event-loop"

    /// The thread's body: wait, resume the waiters whose descriptors are ready, until woken to stop.
    func run() {
        var identifiers = [UInt64](repeating: 0, count: 64)
        var events = [UInt32](repeating: 0, count: 64)
        while true {
            let count = vq_epoll_wait(epoll, &identifiers, &events, 64, -1)
            if count < 0 {
                if errno == EINTR { continue }
                // The loop cannot wait any more: no task may be left asleep in it.
                failure.withLock { $0 = systemError("epoll_wait") }
                for waiter in waiters.withLock({ Array($0.values) }) { waiter.fire() }
                return
            }
            for index in 0..<Int(count) {
                let id = identifiers[index]
                if id == 0 { return }
                waiters.withLock { $0[id] }?.fire()
            }
        }
    }

    static let shutDownError = VirtqueueError(.notifierFailed, "the event loop was shut down")
}

/// An error for a failed system call, with `errno`.
func systemError(_ call: String) -> VirtqueueError {
    let code = errno
    return VirtqueueError(.notifierFailed, "\(call) failed: errno \(code)", underlyingErrno: code)
}
