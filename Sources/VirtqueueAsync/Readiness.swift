import Synchronization
import Virtqueue

/// One notifier's registration with an ``EventLoop``: a queue's way to sleep until its peer
/// notifies, without blocking a thread.
///
/// Made by ``EventLoop/register(_:)``; the registration ends (its descriptors leave the loop)
/// when the last reference goes away. It keeps the notifier, and so its descriptors, alive.
/// One task waits on a registration at a time: the queue that owns it.
public final class Readiness: Sendable {
    let waiter: Waiter
    /// Keeps the descriptors open while they are registered.
    let notifier: any ReadinessNotifier

    init(waiter: Waiter, notifier: any ReadinessNotifier) {
        self.waiter = waiter
        self.notifier = notifier
    }

    deinit {
        waiter.loop.deregister(waiter)
    }

    /// Suspends the calling task until one of the notifier's descriptors is readable, or — if
    /// `cancellable` — the task is cancelled. It may return spuriously: callers re-check.
    ///
    /// - Throws: `CancellationError` when a cancellable wait's task is cancelled;
    ///   `VirtqueueError` with code `VirtqueueError/Code/notifierFailed` when the
    ///   loop was shut down, or `epoll_ctl` or `epoll_wait` failed.
    public func wait(cancellable: Bool = true) async throws {
        if cancellable { try Task.checkCancellation() }
        waiter.reset()
        try waiter.loop.arm(waiter)
        if cancellable {
            await withTaskCancellationHandler {
                await waiter.suspend()
            } onCancel: {
                waiter.cancel()
            }
            try Task.checkCancellation()
        } else {
            await waiter.suspend()
        }
        if let stopped = waiter.loop.stoppedReason { throw stopped }
    }
}

/// The state one registration's task and the loop's thread share.
final class Waiter: Sendable {
    struct State: ~Copyable {
        /// The suspended task's continuation. Unsafe (no check against a second resume, and no
        /// allocation for one): the state machine resumes it once, under the lock.
        var continuation: UnsafeContinuation<Void, Never>?
        /// The loop fired while no task was suspended: the next suspension returns at once.
        var fired = false
        /// The waiting task was cancelled.
        var cancelled = false
    }

    let id: UInt64
    let descriptors: [CInt]
    let loop: EventLoop
    let state = Mutex(State())

    init(id: UInt64, descriptors: [CInt], loop: EventLoop) {
        self.id = id
        self.descriptors = descriptors
        self.loop = loop
    }

    /// Forgets a readiness and a cancellation from an earlier wait, before the descriptors are armed.
    func reset() {
        state.withLock {
            $0.fired = false
            $0.cancelled = false
        }
    }

    func suspend() async {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let resumeNow = state.withLock { state in
                if state.fired || state.cancelled {
                    state.fired = false
                    return true
                }
                state.continuation = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    /// A descriptor is ready (called on the loop's thread) or the loop stopped.
    func fire() {
        let continuation = state.withLock { state in
            guard let continuation = state.continuation.take() else {
                state.fired = true
                return nil as UnsafeContinuation<Void, Never>?
            }
            return continuation
        }
        continuation?.resume()
    }

    func cancel() {
        let continuation = state.withLock { state in
            state.cancelled = true
            return state.continuation.take()
        }
        continuation?.resume()
    }
}
