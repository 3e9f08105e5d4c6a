/// The errors the hot path throws, built out of line.
///
/// A message built by string interpolation is a lot of code. Inside `submit`, `nextRequest` or
/// `takeUsed` it makes the function look big to the inliner and crowds the registers of the
/// path that never throws. Each error here is made by a small function that is never inlined,
/// so the hot path keeps only a compare and a call on its cold branch.
extension VirtqueueError {
    // MARK: Both sides: a token of another queue

    @usableFromInline @inline(never)
    static func notOwned(
        _ token: StaticString,
        of identity: UInt32,
        passedTo call: StaticString,
        on queue: UInt32
    ) -> VirtqueueError {
        VirtqueueError(
            .notOwned,
            "\(token) of queue #\(identity) passed to \(call) on queue #\(queue); a queue takes only its own chains, requests and used chains"
        )
    }

    // MARK: Device side: the available ring and descriptor chains

    @usableFromInline @inline(never)
    static func availableIndexJump(_ index: UInt16, last: UInt16, size: Int) -> VirtqueueError {
        VirtqueueError(
            .availableIndexJump,
            "avail.idx \(index) is \(Int(index &- last)) past the last seen \(last); the queue size is \(size)"
        )
    }

    @usableFromInline @inline(never)
    static func headOutOfRange(_ head: UInt16, slot: UInt16, size: Int) -> VirtqueueError {
        VirtqueueError(
            .headOutOfRange,
            "avail.ring[\(slot)] names head \(head), not below the queue size \(size)"
        )
    }

    @usableFromInline @inline(never)
    static func headAlreadyInFlight(_ head: UInt16) -> VirtqueueError {
        VirtqueueError(
            .headAlreadyInFlight,
            "head \(head) was made available again before the device completed it"
        )
    }

    static func resubmittedHeadOutOfRange(_ head: UInt16, size: Int) -> VirtqueueError {
        VirtqueueError(.headOutOfRange, "resubmitted head \(head) is not below the queue size \(size)")
    }

    static func tooManyResubmitted(_ head: UInt16, inFlight: Int) -> VirtqueueError {
        VirtqueueError(
            .tooManyResubmitted,
            "resubmitting head \(head) would hold more than the \(inFlight) chains the cursor has in flight"
        )
    }

    @usableFromInline @inline(never)
    static func descriptorLoop(head: UInt16, size: Int) -> VirtqueueError {
        VirtqueueError(
            .descriptorLoop,
            "the chain from head \(head) visits more than \(size) descriptors (it loops)"
        )
    }

    @usableFromInline @inline(never)
    static func nextOutOfRange(descriptor index: UInt16, next: UInt16, size: Int) -> VirtqueueError {
        VirtqueueError(
            .nextOutOfRange,
            "descriptor \(index) has next \(next), not below the queue size \(size)"
        )
    }

    @usableFromInline @inline(never)
    static func bufferOutOfRange(
        descriptor index: UInt16,
        address: UInt64,
        length: UInt32,
        _ problem: String
    ) -> VirtqueueError {
        VirtqueueError(
            .bufferOutOfRange,
            "descriptor \(index): buffer at bus address \(hex(address)) of \(length) bytes: \(problem)"
        )
    }

    @usableFromInline @inline(never)
    static func writableBeforeReadable(descriptor index: UInt16) -> VirtqueueError {
        VirtqueueError(
            .writableBeforeReadable,
            "descriptor \(index) is device-readable but follows a device-writable descriptor"
        )
    }

    @usableFromInline @inline(never)
    static func packedListPastInFlight(
        from start: PackedRingPosition,
        count: Int,
        inFlight: Int,
        size: Int
    ) -> VirtqueueError {
        VirtqueueError(
            .availableIndexJump,
            "the list from position \(start) reaches \(count) descriptors past the \(inFlight) in flight; "
                + "the queue size is \(size)"
        )
    }

    @usableFromInline @inline(never)
    static func peerChainTooLong(size: Int) -> VirtqueueError {
        VirtqueueError(.peerChainTooLong, "the chain has more than \(size) descriptors")
    }

    @usableFromInline @inline(never)
    static func segmentStoreExhausted(capacity: Int) -> VirtqueueError {
        VirtqueueError(
            .segmentStoreExhausted,
            "the device holds \(capacity) segments of taken requests; complete some first"
        )
    }

    @usableFromInline @inline(never)
    static func writtenLengthTooLarge(_ written: Int, writable: Int, request id: UInt16) -> VirtqueueError {
        VirtqueueError(
            .writtenLengthTooLarge,
            "written length \(written) is outside 0...\(writable) for request \(id); completed it with 0"
        )
    }

    // MARK: Driver side: the used ring

    @usableFromInline @inline(never)
    static func usedIndexJump(_ index: UInt16, last: UInt16, size: Int) -> VirtqueueError {
        VirtqueueError(
            .usedIndexJump,
            "used.idx \(index) is \(Int(index &- last)) past the last seen \(last); the queue size is \(size)"
        )
    }

    @usableFromInline @inline(never)
    static func usedIDOutOfRange(_ id: UInt32, size: Int) -> VirtqueueError {
        VirtqueueError(.usedIDOutOfRange, "used.id \(id) is not below the queue size \(size)")
    }

    @usableFromInline @inline(never)
    static func usedIDNotInFlight(_ id: UInt32) -> VirtqueueError {
        VirtqueueError(.usedIDNotInFlight, "used.id \(id) names no chain in flight")
    }

    @usableFromInline @inline(never)
    static func usedLengthTooLarge(_ length: UInt32, head: UInt16, writable: UInt64) -> VirtqueueError {
        VirtqueueError(
            .usedLengthTooLarge,
            "used.len \(length) for chain \(head) exceeds its \(writable) writable bytes"
        )
    }

    // MARK: Driver side: caller mistakes while building chains

    @usableFromInline @inline(never)
    static func readableAfterWritable(count: Int) -> VirtqueueError {
        VirtqueueError(
            .readableAfterWritable,
            "a readable segment of \(count) bytes cannot follow the chain's writable segments"
        )
    }

    @usableFromInline @inline(never)
    static func emptyChain() -> VirtqueueError {
        VirtqueueError(.emptyChain, "a chain with no segments cannot be submitted")
    }

    @usableFromInline @inline(never)
    static func payloadTooLarge(_ length: Int, bufferSize: Int) -> VirtqueueError {
        VirtqueueError(.payloadTooLarge, "segment of \(length) bytes does not fit a \(bufferSize)-byte buffer")
    }

    @usableFromInline @inline(never)
    static func chainTooLong(segments: Int, limit: Int) -> VirtqueueError {
        VirtqueueError(.chainTooLong, "chain of \(segments) segments exceeds the limit of \(limit)")
    }

    @usableFromInline @inline(never)
    static func indirectTableTooSmall(segments: Int, bufferSize: Int) -> VirtqueueError {
        VirtqueueError(
            .chainTooLong,
            "chain of \(segments) segments does not fit an indirect table in a \(bufferSize)-byte buffer"
        )
    }

    @usableFromInline @inline(never)
    static func ringFull(size: Int) -> VirtqueueError {
        VirtqueueError(.ringFull, "all \(size) descriptors are in use")
    }

    @usableFromInline @inline(never)
    static func poolExhausted(bufferCount: Int) -> VirtqueueError {
        VirtqueueError(.poolExhausted, "all \(bufferCount) pool buffers are in use")
    }
}

/// The token rule, applied by every call that takes a chain, a request or a used chain: a token
/// made by another queue is refused with ``VirtqueueError/Code-swift.struct/notOwned``, naming
/// both queues, before the call touches anything (a caller error: the queue stays usable).
///
/// - Parameters:
///   - token: What the token is, for the message: "chain", "request" or "used chain".
///   - identity: The identity of the queue that made the token.
///   - call: The call it was passed to.
///   - queue: The identity of the queue that was called.
@inlinable @inline(__always)
func checkOwned(
    _ token: StaticString,
    of identity: UInt32,
    passedTo call: StaticString,
    on queue: UInt32
) throws(VirtqueueError) {
    guard identity == queue else { throw .notOwned(token, of: identity, passedTo: call, on: queue) }
}
