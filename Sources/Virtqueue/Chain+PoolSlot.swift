extension Chain {
    /// The pool buffer of the chain's first segment (`UInt32.max` for an empty chain): a name for
    /// the chain that, unlike its head descriptor, stays its own until ``DriverQueue/free(_:)``
    /// gives the buffers back — the head is free for reuse as soon as the chain is taken back.
    package var firstPoolBuffer: UInt32 { record?.firstBuffer ?? noBuffer }
}

extension UsedChain {
    /// The pool buffer of the chain's first segment: see `Chain.firstPoolBuffer`.
    package var firstPoolBuffer: UInt32 { firstBuffer }
}
