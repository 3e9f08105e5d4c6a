public import Virtqueue

extension DeviceQueue where Memory: ~Copyable, Notify: ReadinessNotifier {
    /// Takes the next request the driver made available, suspending the task — not blocking
    /// its thread — until there is one.
    ///
    /// Between sleeps it keeps the blocking wait's protocol (`DeviceQueue/prepareToWaitForRequests()`):
    /// ask for a kick, re-check, and only then sleep in `readiness`'s event loop.
    ///
    /// - Parameters:
    ///   - readiness: This queue's notifier, registered with an ``EventLoop``.
    ///   - spins: How many times it reads `avail.idx` before it sleeps, as
    ///     `DeviceQueue.waitForRequests(spins:)`.
    /// - Returns: The request, which the caller completes as any other.
    /// - Throws: `VirtqueueError` (`VirtqueueError/Code/peerDied` when the driver
    ///   has gone, which breaks the queue, or a violation); `CancellationError` when the task is
    ///   cancelled while it sleeps — nothing was taken, the ring is as it was.
    public mutating func nextRequest(waitingWith readiness: Readiness, spins: Int = 256) async throws -> DeviceRequest {
        while true {
            for _ in 0...max(spins, 0) {
                if let request = try nextRequest() { return request }
            }
            if try prepareToWaitForRequests() { continue }
            try await readiness.wait()
        }
    }

    /// Serves requests until the task is cancelled or the queue ends: takes each request,
    /// passes it to `handler` with the queue (for `DeviceQueue/forEachReadable(in:_:)`,
    /// `DeviceQueue/scatter(_:into:)` and the rest), completes it with the bytes `handler`
    /// returns, and notifies the driver at the end of each batch and every 16 completions within one.
    ///
    /// A request whose handler throws — cancellation included — is completed with 0 bytes
    /// written, so the driver gets its buffers back, and the error ends the loop.
    ///
    /// - Parameters:
    ///   - readiness: This queue's notifier, registered with an ``EventLoop``.
    ///   - spins: How many times it reads `avail.idx` before it sleeps.
    ///   - handler: Handles one request; returns the bytes written into its writable segments.
    /// - Throws: `VirtqueueError` with code `VirtqueueError/Code/peerDied` when
    ///   the driver has gone, another `VirtqueueError` for a violation, `CancellationError`, or
    ///   whatever `handler` throws.
    public mutating func serve(
        waitingWith readiness: Readiness,
        spins: Int = 256,
        _ handler: (borrowing DeviceRequest, borrowing Self) async throws -> Int
    ) async throws {
        var completed = 0
        while true {
            let request: DeviceRequest
            if let next = try nextRequest() {
                request = next
            } else {
                // The end of a batch: tell the driver, then sleep until the next one.
                completed = 0
                try notifyIfNeeded()
                request = try await nextRequest(waitingWith: readiness, spins: spins)
            }
            let written: Int
            do {
                written = try await handler(request, self)
            } catch {
                try complete(request, written: 0)
                _ = try? notifyIfNeeded()
                throw error
            }
            try complete(request, written: written)
            completed += 1
            if completed == 16 {
                completed = 0
                try notifyIfNeeded()
            }
        }
    }
}
