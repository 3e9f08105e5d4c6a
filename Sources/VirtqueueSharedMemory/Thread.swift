import CVirtqueueSystem
import Glibc
package import SystemPackage

/// A thread ``startJoinableThread(_:)`` started. Join it or detach it, once.
package struct StartedThread: Sendable {
    let handle: pthread_t

    /// Waits for the thread to end.
    package func join() {
        _ = pthread_join(handle, nil)
    }

    /// Lets the thread end on its own; it cannot be joined afterwards.
    package func detach() {
        _ = pthread_detach(handle)
    }

    /// Names the thread, as `/proc/self/task/*/comm` shows it (at most 15 bytes are kept).
    package func setName(_ name: String) {
        _ = vq_thread_set_name(handle, name)
    }
}

/// Starts a joinable thread running `body`: the one thread starter of the device host's queue
/// loops, the vhost-user back-end's rings and the async event loop.
///
/// - Throws: `Errno` with the error `pthread_create` returned; `body` is then released unrun.
package func startJoinableThread(_ body: @escaping @Sendable () -> Void) throws(Errno) -> StartedThread {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(
        &thread,
        nil,
        { raw in
            guard let raw else { return nil }
            Unmanaged<Box>.fromOpaque(raw).takeRetainedValue().body()
            return nil
        },
        box
    )
    guard result == 0 else {
        Unmanaged<Box>.fromOpaque(box).release()
        throw Errno(rawValue: result)
    }
    return StartedThread(handle: thread)
}
