/// How a vhost-user back-end behaves: its bounds and timeouts.
public struct VhostUserBackendOptions: Hashable, Sendable {
    /// The memory slots offered (GET_MAX_MEM_SLOTS): how many regions ADD_MEM_REG may add. 32 by
    /// default (QEMU asks for at most 509; a guest rarely has more than a few regions).
    public var maxMemorySlots: Int
    /// Whether to refuse a memory region whose file is not sealed against shrinking
    /// (`F_SEAL_SHRINK`). Off by default, since QEMU's `memory-backend-file` is not sealed; an
    /// unsealed region is accepted with a notice in the log, because a front-end that shrinks the
    /// file under a mapping makes the back-end's next access to it fault.
    public var requireSealedMemory: Bool
    /// How long a ring polls the available ring before it sleeps (``Virtqueue/DeviceQueue/waitForRequests(spins:)``).
    public var spins: Int
    /// How long to wait for a ring's serving thread to stop (GET_VRING_BASE, disable, end of
    /// connection) before giving up on it and closing the connection.
    public var stopTimeout: Duration
    /// How long the rest of a message may take once it began (``VhostUserSocket``).
    public var messageTimeout: Duration?
    /// How long to wait for the next message; `nil`: for ever.
    public var idleTimeout: Duration?

    /// Options; every argument has its default.
    public init(
        maxMemorySlots: Int = 32,
        requireSealedMemory: Bool = false,
        spins: Int = 256,
        stopTimeout: Duration = .seconds(5),
        messageTimeout: Duration? = .seconds(5),
        idleTimeout: Duration? = nil
    ) {
        self.maxMemorySlots = maxMemorySlots
        self.requireSealedMemory = requireSealedMemory
        self.spins = spins
        self.stopTimeout = stopTimeout
        self.messageTimeout = messageTimeout
        self.idleTimeout = idleTimeout
    }
}
