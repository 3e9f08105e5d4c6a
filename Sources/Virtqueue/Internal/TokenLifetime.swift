/// The private state of a queue whose tokens — chains, used chains, requests — point at it. It is
/// freed when the queue has gone and no token holds anything of it any more: a token that
/// outlives its queue still has valid memory to look at, and what it gives back goes nowhere.
@usableFromInline
protocol TokenHoldingState {
    /// Whether no token holds anything of this state (so that nothing will touch it again once
    /// the queue has gone).
    var tokensHoldNothing: Bool { get }
    /// Whether the queue has gone (its deinit ran while tokens held something).
    var queueGone: Bool { get set }
    /// The queue is going: forget what only the queue could have given back (the driver's chains
    /// in flight), so that ``tokensHoldNothing`` counts the tokens alone.
    mutating func queueLeaving()
    /// Frees what the state owns (not the state itself).
    func deallocate()
}

extension UnsafeMutablePointer where Pointee: TokenHoldingState {
    /// The queue went away: frees the state now, or marks it for the last token that holds
    /// something of it to free.
    func releaseQueue() {
        pointee.queueLeaving()
        guard pointee.tokensHoldNothing else {
            pointee.queueGone = true
            return
        }
        free()
    }

    /// A token gave back what it held (to a queue still there, or to the state of one gone):
    /// frees the state if its queue has gone and no token holds anything of it any more.
    ///
    /// - Returns: Whether the queue is still there; `false` when it has gone (and the state may
    ///   have been freed: the caller touches it no more).
    @discardableResult
    func tokenReleased() -> Bool {
        guard pointee.queueGone else { return true }
        if pointee.tokensHoldNothing { free() }
        return false
    }

    private func free() {
        pointee.deallocate()
        deinitialize(count: 1)
        deallocate()
    }
}
