/// A claim on one submitted chain's completion: what ``AsyncDriverQueue/submit(_:)`` returns and
/// ``AsyncDriverQueue/completion(of:)`` turns back into the `~Copyable` `UsedChain`.
///
/// The chain itself stays `~Copyable` and owned by one party at a time — the ring while the
/// device holds it, the queue once it is back, the caller once ``AsyncDriverQueue/completion(of:)``
/// hands it over. The submission is only a name for it, `Copyable` and `Sendable` so it can be
/// stored, compared and passed around; a stale copy (its chain already handed over) is refused.
public struct Submission: Hashable, Sendable, CustomStringConvertible {
    /// The chain's id: its head descriptor index, as the device sees it.
    public let id: UInt16
    /// The pool buffer of the chain's first segment, the queue's name for it until it is freed
    /// (its head may be reused as soon as the chain is back).
    let slot: UInt32
    /// Which submission of that slot this is: buffers are reused.
    let sequence: UInt64
    /// The queue that made it.
    let queueIdentity: UInt64

    public var description: String { "Submission(id: \(id), #\(sequence))" }
}
