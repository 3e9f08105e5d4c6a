import Synchronization
public import Virtqueue

/// The driver's end of a split virtqueue with an async API: submit a chain, then
/// `try await` its completion.
///
/// ```swift
/// var driver = try AsyncDriverQueue(DriverQueue(region: region, notifier: notifier))
/// var chain = driver.makeChain()
/// try driver.appendReadable(to: &chain, copying: request)
/// try driver.appendWritable(to: &chain, capacity: 512)
/// let submission = try driver.submit(chain)
/// try driver.notifyIfNeeded()
/// let used = try await driver.completion(of: submission)
/// let count = try driver.queue.copyWrittenBytes(of: used, into: reply)
/// try driver.free(used)
/// ```
///
/// It is the same `DriverQueue` — one ring core, one validator, the same notification
/// suppression — plus a table, one entry per pool buffer (a chain is named by its first
/// segment's buffer, which stays its own until freed, while its head descriptor is reused as soon
/// as the chain is taken back), that turns a `Copyable` ``Submission`` back into its `~Copyable`
/// `UsedChain`. Chains the device returns for other submissions wait in that
/// table until they are asked for, in whatever order the device completes them.
///
/// **Cancellation.** The device cannot be made to give a chain back early. When a task is
/// cancelled while it awaits ``completion(of:)``, the call throws `CancellationError` and the
/// submission is given up: its chain goes straight back to the pool when the device returns it
/// (at the next call that collects completions, or ``settle()``). Nothing leaks; the ring is
/// unchanged.
///
/// **Peer death.** When the device dies, waits end with `VirtqueueError` code
/// `VirtqueueError/Code/peerDied`: every chain still in flight is taken back
/// (`DriverQueue/takeAbandoned()`) and freed, and later calls report the same error.
public struct AsyncDriverQueue<Memory: GuestMemory & ~Copyable, Notify: ReadinessNotifier>: ~Copyable {
    enum Entry: UInt8 {
        /// No submission's chain starts with this pool buffer.
        case idle
        /// Submitted; the device holds it.
        case inFlight
        /// The device returned it; it waits in `parked` for its submission.
        case parked
        /// Its waiter was cancelled: it goes back to the pool when the device returns it.
        case givenUp
    }

    /// The queue, for what this type does not wrap: reading used chains
    /// (`DriverQueue/copyWrittenBytes(of:into:)`, `DriverQueue/forEachSegment(of:_:)`) and the counts.
    public private(set) var queue: DriverQueue<Memory, Notify>
    /// The notifier's registration.
    public let readiness: Readiness
    let entries: UnsafeMutablePointer<Entry>
    let sequences: UnsafeMutablePointer<UInt64>
    /// Used chains returned for submissions not yet asked for, by first pool buffer: initialized
    /// where `entries` says `.parked`.
    let parked: UnsafeMutablePointer<UsedChain>
    var nextSequence: UInt64 = 0
    var givenUpCount = 0
    let identity: UInt64
    /// How many times a wait reads `used.idx` before it sleeps, as `DriverQueue.waitForUsed(spins:)`.
    public var spins: Int

    /// Wraps `queue`, registering its notifier with `loop` (``EventLoop/shared`` when `nil`).
    /// The queue must have no chain in flight.
    ///
    /// - Parameters:
    ///   - queue: The queue; it has no chain in flight.
    ///   - loop: The event loop to sleep in; ``EventLoop/shared`` when `nil`.
    ///   - spins: How many times a wait reads `used.idx` before it sleeps (see ``spins``).
    /// - Throws: `VirtqueueError`: `VirtqueueError/Code/invalidConfiguration`
    ///   for a queue with chains in flight; `VirtqueueError/Code/notifierFailed`
    ///   if the notifier cannot be registered.
    public init(
        _ queue: consuming DriverQueue<Memory, Notify>,
        loop: EventLoop? = nil,
        spins: Int = 256
    ) throws(VirtqueueError) {
        guard queue.inFlightCount == 0 else {
            throw VirtqueueError(
                .invalidConfiguration,
                "the queue has \(queue.inFlightCount) chains in flight; wrap it before submitting any"
            )
        }
        readiness = try EventLoop.resolve(loop).register(queue.notifier)
        let size = queue.bufferCount
        entries = .allocate(capacity: size)
        entries.initialize(repeating: .idle, count: size)
        sequences = .allocate(capacity: size)
        sequences.initialize(repeating: 0, count: size)
        parked = .allocate(capacity: size)
        identity = asyncQueueIdentities.add(1, ordering: .relaxed).newValue
        self.spins = spins
        self.queue = queue
    }

    deinit {
        // Parked chains give their buffers back to the queue, which is still alive here.
        for slot in 0..<queue.bufferCount where entries[slot] == .parked {
            _ = (parked + slot).move()
        }
        parked.deallocate()
        entries.deallocate()
        sequences.deallocate()
    }

    // MARK: Building and submitting

    /// Submissions awaited by nobody whose chains the device still holds (their tasks were cancelled).
    public var givenUpSubmissionCount: Int { givenUpCount }

    /// Starts a new, empty chain: `DriverQueue/makeChain()`.
    public func makeChain() -> Chain {
        queue.makeChain()
    }

    /// Appends a device-readable segment holding a copy of `bytes`:
    /// `DriverQueue/appendReadable(to:copying:)-(_,UnsafeRawBufferPointer)`.
    ///
    /// - Throws: As `DriverQueue/appendReadable(to:count:_:)`.
    public mutating func appendReadable(to chain: inout Chain, copying bytes: UnsafeRawBufferPointer)
        throws(VirtqueueError)
    {
        try queue.appendReadable(to: &chain, copying: bytes)
    }

    /// Appends a device-readable segment of `count` bytes that `fill` writes in place:
    /// `DriverQueue/appendReadable(to:count:_:)`.
    ///
    /// - Throws: As `DriverQueue/appendReadable(to:count:_:)`.
    public mutating func appendReadable(
        to chain: inout Chain,
        count: Int,
        _ fill: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(VirtqueueError) {
        try queue.appendReadable(to: &chain, count: count, fill)
    }

    /// Appends a device-writable segment: `DriverQueue/appendWritable(to:capacity:)`.
    ///
    /// - Throws: As `DriverQueue/appendWritable(to:capacity:)`.
    public mutating func appendWritable(to chain: inout Chain, capacity: Int? = nil) throws(VirtqueueError) {
        try queue.appendWritable(to: &chain, capacity: capacity)
    }

    /// Gives a chain that was never submitted back to the pool: `DriverQueue/discard(_:)`.
    ///
    /// - Throws: As `DriverQueue/discard(_:)`.
    public mutating func discard(_ chain: consuming Chain) throws(VirtqueueError) {
        try queue.discard(chain)
    }

    /// Makes a chain available to the device (`DriverQueue/submit(_:)`) and returns the claim
    /// on its completion. Notify with ``notifyIfNeeded()`` after a batch.
    ///
    /// - Throws: As `DriverQueue/submit(_:)`.
    public mutating func submit(_ chain: consuming Chain) throws(VirtqueueError) -> Submission {
        // Read before submit consumes the chain; an empty chain (no buffer) is refused by submit.
        let slot = chain.firstPoolBuffer
        let head = try queue.submit(chain)
        nextSequence &+= 1
        entries[Int(slot)] = .inFlight
        sequences[Int(slot)] = nextSequence
        return Submission(id: head, slot: slot, sequence: nextSequence, queueIdentity: identity)
    }

    /// Kicks the device if it asked to be: `DriverQueue/notifyIfNeeded()`.
    ///
    /// - Throws: As `DriverQueue/notifyIfNeeded()`.
    @discardableResult
    public mutating func notifyIfNeeded() throws(VirtqueueError) -> Bool {
        try queue.notifyIfNeeded()
    }

    /// Returns a used chain's buffers to the pool: `DriverQueue/free(_:)`.
    ///
    /// - Throws: As `DriverQueue/free(_:)`.
    public mutating func free(_ used: consuming UsedChain) throws(VirtqueueError) {
        try queue.free(used)
    }

    // MARK: Awaiting completions

    /// Suspends until the device has returned `submission`'s chain, and hands it over.
    ///
    /// Chains returned meanwhile for other submissions are kept for their own calls. The task
    /// sleeps in the event loop, never on a thread of the cooperative pool; between sleeps the
    /// queue asks for a notification and re-checks (`DriverQueue/prepareToWaitForUsed()`), as
    /// the blocking wait does.
    ///
    /// - Returns: The used chain, `UsedChain/Status-swift.enum/completed`. Free it with ``free(_:)``.
    /// - Throws: `CancellationError` if the task is cancelled first — the submission is then
    ///   given up and its chain freed when it comes back; `VirtqueueError` with code
    ///   `VirtqueueError/Code/peerDied` when the device has gone (or the violation
    ///   that broke the queue), after every chain in flight was taken back and freed;
    ///   `VirtqueueError/Code/notOwned` for a submission of another queue, or one
    ///   whose chain was already handed over or given up.
    public mutating func completion(of submission: Submission) async throws -> UsedChain {
        let slot = Int(submission.slot)
        guard submission.queueIdentity == identity, slot < queue.bufferCount,
            sequences[slot] == submission.sequence
        else {
            throw VirtqueueError(.notOwned, "\(submission) is not this queue's, or its chain was handed over")
        }
        while true {
            switch entries[slot] {
            case .parked:
                entries[slot] = .idle
                return (parked + slot).move()
            case .inFlight:
                break
            case .idle, .givenUp:
                if let reason = queue.brokenReason { throw reason }
                throw VirtqueueError(.notOwned, "\(submission)'s chain was already handed over or given up")
            }
            guard try await collectOrSleep(cancellable: true) else { continue }
            // Cancelled: the chain is not wanted any more.
            if entries[slot] == .parked {
                entries[slot] = .idle
                try queue.free((parked + slot).move())
            } else if entries[slot] == .inFlight {
                entries[slot] = .givenUp
                givenUpCount += 1
            }
            throw CancellationError()
        }
    }

    /// Frees the chains whose waiters were cancelled as the device returns them, and returns
    /// once none is left — or at once, when none is. It is cleanup, so the task's cancellation
    /// does not end it; the device's death does (the chains are then taken back and freed).
    ///
    /// - Throws: `VirtqueueError` if the queue broke for another reason than the device's
    ///   death, or the event loop failed.
    public mutating func settle() async throws {
        while givenUpCount > 0 {
            do {
                _ = try await collectOrSleep(cancellable: false)
            } catch {
                // The device died: reclaimAbandoned freed the given-up chains with the rest.
                if let error = error as? VirtqueueError, error.code == .peerDied { return }
                throw error
            }
        }
    }

    /// Takes every used chain the device has returned; if none of those was new, polls ``spins``
    /// times, then prepares to sleep and sleeps once. Returns `true` if the task was cancelled
    /// while it slept.
    mutating func collectOrSleep(cancellable: Bool) async throws -> Bool {
        do throws(VirtqueueError) {
            for _ in 0...max(spins, 0) {
                var collected = false
                while let used = try queue.takeUsed() {
                    collected = true
                    park(used)
                }
                if collected { return false }
            }
            if try queue.prepareToWaitForUsed() { return false }
        } catch {
            reclaimAbandoned()
            throw queue.brokenReason ?? error
        }
        do {
            try await readiness.wait(cancellable: cancellable)
        } catch {
            if error is CancellationError { return true }
            throw error
        }
        return false
    }

    /// Keeps a returned chain for its submission, or frees it if the submission was given up.
    mutating func park(_ used: consuming UsedChain) {
        let slot = Int(used.firstPoolBuffer)
        if entries[slot] == .givenUp {
            entries[slot] = .idle
            givenUpCount -= 1
            _ = try? queue.free(used)
        } else {
            entries[slot] = .parked
            (parked + slot).initialize(to: used)
        }
    }

    /// After the queue broke: takes back and frees every chain still in flight.
    mutating func reclaimAbandoned() {
        while let used = queue.takeAbandoned() {
            let slot = Int(used.firstPoolBuffer)
            if entries[slot] == .givenUp { givenUpCount -= 1 }
            entries[slot] = .idle
            _ = try? queue.free(used)
        }
    }
}

/// An identity for each async driver queue, so that submissions from one are refused by another.
let asyncQueueIdentities = Atomic<UInt64>(0)
