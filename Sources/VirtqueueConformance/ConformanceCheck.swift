/// A named check of the conformance suite.
///
/// Run one with ``ConformanceSuite/run(_:on:)``, or every one with
/// ``ConformanceSuite/runAll(on:)``. A failing check throws a ``ConformanceFailure`` that names
/// the check, says what broke, and points at the assertion in the suite's source.
public enum ConformanceCheck: String, CaseIterable, Hashable, Sendable, CustomStringConvertible {
    /// Bytes written through one end's region are read back through the other end's, at the
    /// start, the middle and the end of the region, in both directions; both mappings are
    /// 16-byte aligned and large enough.
    case regionEndsShareBytes

    /// The seed's eight steps (seL4 libvirtqueue's use case), in order, on one thread: the driver
    /// chains buffers and kicks; the device takes the entry, gathers its buffers, moves it to the
    /// used ring and kicks back; the driver takes it and frees its buffers. After each kick the
    /// other side waits once, and that wait must return. (It does not prove that the kick woke
    /// it: a wait that returns without a kick passes. ``notifierDeliversKicks`` proves that.)
    case seedUseCase

    /// An empty ring hands out nothing; a full ring of N one-segment chains refuses the next
    /// with `ringFull`; chains completed out of order come back with the right ids; three rounds,
    /// so ring slots wrap.
    case ringFullAndEmpty

    /// Allocating past the buffer pool fails with `poolExhausted`, leaves the queue usable, and
    /// the pool refills as chains come back.
    case poolExhaustion

    /// Chains of 1 … N segments, direct (without VIRTIO_F_INDIRECT_DESC) and indirect, each
    /// served by a ``ConformanceDevice`` whose checksummed reply the driver verifies.
    case chainLengths

    /// More than 65,536 round trips on a small queue, so both 16-bit ring indices wrap, with
    /// every payload checked.
    case indexWrap

    /// With VIRTIO_F_EVENT_IDX on and off, counting calls to `notify()` with a
    /// ``CountingNotifier``: a burst of 32 submissions while the device is awake makes one call,
    /// and 32 completions while the driver polls make one; after each, one wait on the other side
    /// returns. (It counts kicks *sent*; ``notifierDeliversKicks`` proves they arrive.)
    case notificationSuppression

    /// With VIRTIO_F_EVENT_IDX on and off, driver and device on two threads that call `wait()`
    /// whenever the ring is empty (no spinning in the queues), thousands of round trips with
    /// checksummed replies: neither side is left waiting for ever. Together with
    /// ``notifierDeliversKicks`` (waits sleep until kicked), no wake-up is lost; a lost one shows
    /// up as a timeout.
    case noLostWakeUp

    /// The notifier alone, in both directions: a thread that waits until a counter moves keeps
    /// up with another that moves it and kicks, 1,000 times (merged and spurious wake-ups
    /// tolerated).
    case notifierWakesAWaiter

    /// The notifier alone, in both directions: a wait after a kick returns, and 100,000 kicks with
    /// nobody waiting do not block the sender, and the next wait returns.
    case notifierKeepsEarlyKicks

    /// The notifier alone, in both directions: a wait with no kick sent *sleeps* — over three
    /// quiet spells of 100 ms it returns at most twice in all (spurious wake-ups are allowed,
    /// spinning is not) — and one kick then wakes it within
    /// ``ConformanceSuite/Configuration/timeout``, each time. This is the check that proves a
    /// kick sent is a kick received: a notifier that drops kicks either never wakes the waiter
    /// (a timeout) or wakes it without them (it does not sleep).
    case notifierDeliversKicks

    /// The notifier alone, in both directions: when one end closes, the other end's wait — one
    /// already blocked, and one started afterwards — ends with `peerDied` instead of hanging.
    case notifierEndsWaitOnPeerClose

    /// Driver and device on different threads (or the backend's launched device), at least
    /// ``ConformanceSuite/Configuration/stressChainCount`` chains in batches, each with a
    /// checksummed payload and a reply the driver verifies.
    case concurrentStress

    /// The driver under test, a hostile device writing the used ring through the backend's own
    /// memory: every driver-side rule of `docs/trust-model.md` gives its typed error, breaks the
    /// queue, and the driver takes back every buffer (`takeAbandoned()` + `free`).
    case hostileDevice

    /// The device under test, a hostile driver writing descriptors and the available ring through
    /// the backend's own memory: every device-side rule of `docs/trust-model.md` gives its typed
    /// error and breaks the queue.
    case hostileDriver

    /// The device dies holding a request with more chains queued behind it (killed, for a
    /// launched device that can be; its end closed otherwise): the driver's wait ends with
    /// `peerDied`, and every chain in flight comes back `.abandoned(.peerDied)`.
    case peerDeathMidFlight

    /// Process death, without a launcher of the backend's: the backend hands one end of a queue
    /// to the suite's helper process (``ConformanceBackend/withProcessEnds(layout:keeping:_:)``),
    /// which maps it and acts as the device (then, in a second run, as the driver) while the
    /// suite's side streams checksummed chains through the backend's end in this process. After
    /// 64 chains have crossed, the helper is killed with `SIGKILL`: the surviving side's queue
    /// must end with `VirtqueueError.Code.peerDied` within ``ConformanceSuite/Configuration/timeout``
    /// — nothing closes its end but the kernel — and then its notifier's `wait()` throws
    /// `peerDied` and its `notify()` neither blocks nor throws anything else; the surviving
    /// driver takes back every chain in flight. Does not apply to a backend that says why it
    /// cannot put an end in another process.
    case peerProcessDeath

    public var description: String { rawValue }
}

extension ConformanceCheck {
    /// Whether the check runs queues, and so runs differently with
    /// ``ConformanceSuite/Configuration/inOrder``: every check but those of the notifier or the
    /// bytes alone.
    public var usesRings: Bool {
        switch self {
        case .regionEndsShareBytes, .notifierWakesAWaiter, .notifierKeepsEarlyKicks, .notifierDeliversKicks,
            .notifierEndsWaitOnPeerClose:
            false
        default: true
        }
    }
}
