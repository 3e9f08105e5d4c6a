public import Virtqueue

/// The device's end of a split virtqueue with an async API: a `DeviceQueue` and its notifier's
/// registration with an ``EventLoop``.
///
/// ```swift
/// var device = try AsyncDeviceQueue(DeviceQueue(region: region, notifier: notifier))
/// try await device.serve { request, queue in
///     var bytes = [UInt8](repeating: 0, count: request.readableByteCount)
///     _ = try bytes.withUnsafeMutableBytes { try queue.gather(request, into: $0) }
///     return try bytes.withUnsafeBytes { try queue.scatter($0, into: request) }
/// }
/// ```
///
/// It is the same queue — one ring core, one validator, the same notification suppression —
/// and ``queue`` is there for everything else (`DeviceQueue/stop()`, the counts). Waiting
/// suspends the task; the loop's thread sleeps in `epoll_wait` for it.
///
/// Requests are `~Copyable`, which `AsyncIteratorProtocol` (whose `Element` must be `Copyable`)
/// cannot carry: requests come from ``nextRequest()`` or to ``serve(_:)``'s handler instead, each
/// owned by exactly one caller until it is completed.
public struct AsyncDeviceQueue<Memory: GuestMemory & ~Copyable, Notify: ReadinessNotifier>: ~Copyable {
    /// The queue: take, read, write and complete requests with its methods.
    public var queue: DeviceQueue<Memory, Notify>
    /// The notifier's registration.
    public let readiness: Readiness
    /// How many times a wait reads `avail.idx` before it sleeps, as `DeviceQueue.waitForRequests(spins:)`.
    public var spins: Int

    /// Wraps `queue`, registering its notifier with `loop` (``EventLoop/shared`` when `nil`).
    ///
    /// - Throws: `VirtqueueError` with code `VirtqueueError/Code/notifierFailed`
    ///   if the notifier cannot be registered.
    ///
    /// - Parameters:
    ///   - queue: The queue.
    ///   - loop: The event loop to sleep in; ``EventLoop/shared`` when `nil`.
    ///   - spins: How many times a wait reads `avail.idx` before it sleeps (see ``spins``).
    public init(
        _ queue: consuming DeviceQueue<Memory, Notify>,
        loop: EventLoop? = nil,
        spins: Int = 256
    ) throws(VirtqueueError) {
        readiness = try EventLoop.resolve(loop).register(queue.notifier)
        self.spins = spins
        self.queue = queue
    }

    /// Takes the next request, suspending until the driver makes one available.
    ///
    /// - Throws: As `DeviceQueue/nextRequest(waitingWith:spins:)`.
    public mutating func nextRequest() async throws -> DeviceRequest {
        try await queue.nextRequest(waitingWith: readiness, spins: spins)
    }

    /// Serves requests until the task is cancelled or the driver goes: see
    /// `DeviceQueue/serve(waitingWith:spins:_:)`.
    ///
    /// - Throws: As `DeviceQueue/serve(waitingWith:spins:_:)`: `VirtqueueError/Code/peerDied`
    ///   ends it when the driver has gone.
    public mutating func serve(
        _ handler: (borrowing DeviceRequest, borrowing DeviceQueue<Memory, Notify>) async throws -> Int
    ) async throws {
        try await queue.serve(waitingWith: readiness, spins: spins, handler)
    }
}
