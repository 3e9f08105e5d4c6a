package import Glibc
package import SystemPackage

/// Starts a joinable thread running `body`: the one thread starter of the device host's queue
/// loops, the vhost-user back-end's rings and the async event loop. The caller joins or
/// detaches the thread it returns.
///
/// - Throws: `Errno` with the error `pthread_create` returned; `body` is then released unrun.
package func startJoinableThread(_ body: @escaping @Sendable () -> Void) throws(Errno) -> pthread_t {
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
    return thread
}
