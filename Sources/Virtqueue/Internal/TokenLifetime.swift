/// The private state of a queue whose tokens — chains, used chains, requests — point at it. It is
/// freed when both the queue and its last live token are gone: a token that outlives its queue
/// still has valid memory to look at, and gives nothing back.
@usableFromInline
protocol TokenHoldingState {
    /// Tokens alive that point at this state.
    var liveTokenCount: Int { get set }
    /// Whether the queue has gone (its deinit ran while tokens were alive).
    var queueGone: Bool { get set }
    /// Frees what the state owns (not the state itself).
    func deallocate()
}

extension UnsafeMutablePointer where Pointee: TokenHoldingState {
    /// The queue went away: frees the state now, or marks it for its last token to free.
    func releaseQueue() {
        guard pointee.liveTokenCount == 0 else {
            pointee.queueGone = true
            return
        }
        pointee.deallocate()
        deinitialize(count: 1)
        deallocate()
    }

    /// A token was dropped without its queue taking it back.
    ///
    /// - Returns: Whether the queue is still there to take back what the token held; `false`
    ///   when it has gone (the state is freed with its last token).
    func tokenDropped() -> Bool {
        pointee.liveTokenCount -= 1
        guard pointee.queueGone else { return true }
        if pointee.liveTokenCount == 0 { releaseQueue() }
        return false
    }
}
