/*
 * The kick / notification-suppression protocol of the packed virtqueue (virtio 1.1+ §2.8):
 * the two event-suppression structures {off_wrap, flags} with ENABLE / DISABLE / DESC, as the
 * wire layer computes them (Sources/Virtqueue/PackedRingFields.swift:
 * PackedEventSuppression.needsNotification, .descriptor, .enable, .disable;
 * PackedRingPosition.advanced) driven by the per-side state machine of the split ring
 * (Sources/Virtqueue/Internal/Ring.swift, QueueSide: publish, notifyIfNeeded with its fence,
 * waitForPeer with enable, fence, re-check, sleep, re-check, disable). The queues do not run the
 * packed ring yet; this is the protocol they are to run, checked before they do.
 *
 * What differs from the split model (notification.pml):
 *  - There are no indices. Each side polls the descriptor at its own position: the device
 *    waits for one whose flags say "available" for its expected wrap counter (AVAIL = w,
 *    USED = !w), the driver for one that says "used" (AVAIL = USED = w). The slots are shared
 *    fields, written through the store buffers like everything else.
 *  - Suppression is one 32-bit structure per side, written with one store: DESC with the
 *    position and wrap counter the sleeper waits at (EVENT_IDX), or ENABLE; DISABLE when awake.
 *  - The notify decision is the packed vring_need_event: the event offset read in the
 *    publisher's lap if its wrap bit agrees, else in the lap before (offset - N); notify when it
 *    lies among the `moved` descriptors just published. `moved` is an exact count (an Int in
 *    the Swift code), so no 2^16 guard is needed.
 *
 * Positions are linear counters modulo M = 2N: position p is descriptor p % N with wrap
 * counter 1 in the first lap (p < N) and 0 in the second, which is exactly what a descriptor
 * index and a wrap bit can tell apart. Chains are one descriptor each and the device uses them
 * in order, so its used position follows its available one (the IN_ORDER shape; a chain of
 * several descriptors only moves both positions by more).
 *
 * Build options (spin -D...): N (queue size, default 2), M (must be 2N, default 4), K (chains
 * in all, default 6), EVENT_IDX (1: DESC events; 0: ENABLE / DISABLE, default 1).
 * Mutants, each of which must make the check fail:
 *   NO_RECHECK        waitForPeer does not re-read the peer's descriptor after enabling
 *   NO_ENABLE_FENCE   enabling has no full fence after its store
 *   NO_PUBLISH_FENCE  notifyIfNeeded has no full fence before reading the peer's structure
 *   NO_WRAP_BIT       the event's wrap bit is ignored (the offset always read in this lap)
 *   POSITION_MOVES    the moves since the last check are taken from the positions
 *                     ((new - old) mod 2N) instead of counted: 2N moves look like none
 */

#ifndef N
#define N 2
#endif
#ifndef M
#define M 4
#endif
#ifndef K
#define K 6
#endif
#ifndef EVENT_IDX
#define EVENT_IDX 1
#endif

/* Shared fields: the N descriptors' flags, then the two event-suppression structures. */
#define DRIVER_EVENT N       /* written by the driver, read by the device */
#define DEVICE_EVENT (N + 1) /* written by the device, read by the driver */
#define FIELDS (N + 2)

#include "tso.pml"

/* A descriptor's AVAIL and USED bits as a number: AVAIL * 2 + USED. The ring starts zeroed. */
#define WRAP(p)        ((p) < N)                      /* the wrap counter at position p: 1, then 0 */
#define SLOT(p)        ((p) % N)
#define AVAILABLE(w)   ((w) * 2 + (1 - (w)))          /* AVAIL = w, USED = !w */
#define USED(w)        ((w) * 3)                      /* AVAIL = USED = w */

/* An event-suppression structure as a number: flags * 16 + wrap * 8 + offset. */
#define ENABLE  0
#define DISABLE 1
#define DESC    2
#define EVENT_DESC(p)  (DESC * 16 + WRAP(p) * 8 + SLOT(p))

bool kickPending;        /* driver -> device notifier */
bool interruptPending;   /* device -> driver notifier */
bool driverClosed;       /* the device's wait ends with peerDied */

byte completed;          /* chains the driver has taken back */
byte published;          /* ghost: descriptors the driver has made available */
byte usedTotal;          /* ghost: descriptors the device has used */

/*
 * notifyIfNeeded: if anything was published since the last check, fence, read the peer's
 * structure once and decide (PackedEventSuppression.needsNotification).
 */
inline notifyIfNeeded(who, position, lastCheck, moved, peerEvent, pending) {
#ifdef POSITION_MOVES
    moved = (position - lastCheck + M) % M;
#endif
    lastCheck = position;
    if
    :: moved == 0 -> need = false
    :: else ->
#ifndef NO_PUBLISH_FENCE
        fence(who);
#endif
        load(who, peerEvent, value);
        if
        :: value / 16 == DISABLE -> need = false
        :: value / 16 == DESC ->
            offset = value % 8;
#ifndef NO_WRAP_BIT
            if
            :: (value / 8) % 2 != WRAP(position) -> offset = offset - N
            :: else -> skip
            fi;
#endif
            behind = SLOT(position) - offset - 1;
            need = (behind >= 0 && behind < moved)
        :: else -> need = true        /* ENABLE, and the reserved mode 3 */
        fi
    fi;
    moved = 0;
    if
    :: need -> fence(who); pending = true   /* notifier.notify() */
    :: else -> skip
    fi;
    need = false; value = 0; offset = 0; behind = 0
}

/*
 * waitForPeer: one optional spin, then enable (DESC at the position waited for, or ENABLE),
 * fence, re-check the descriptor there, sleep, re-check; DISABLE once awake.
 */
inline waitForPeer(who, position, expected, ownEvent, pending, closed) {
    if
    :: load(who, SLOT(position), value);  /* one spin */
        woke = (value == expected)
    :: skip
    fi;
    if
    :: woke -> skip
    :: else ->
        do
        ::
#if EVENT_IDX
            store(who, ownEvent, EVENT_DESC(position));
#else
            store(who, ownEvent, ENABLE * 16);
#endif
#ifndef NO_ENABLE_FENCE
            fence(who);
#endif
#ifndef NO_RECHECK
            load(who, SLOT(position), value);
            if
            :: value == expected -> break
            :: else -> skip
            fi;
#endif
            fence(who);                     /* notifier.wait(): a system call */
            if
            :: atomic { pending -> pending = false }
            :: closed -> peerGone = true; break
            fi;
            load(who, SLOT(position), value);
            if
            :: value == expected -> break
            :: else -> skip
            fi
        od;
        if
        :: !peerGone -> store(who, ownEvent, DISABLE * 16)
        :: else -> skip
        fi
    fi;
    woke = false;
    value = 0
}

/* The driver: submit a burst, notifyIfNeeded, take back what is used, wait only when idle. */
active proctype Driver() {
    byte nextAvailable, lastNotifyCheck, nextUsed, moved;
    byte inFlight, submitted, burst, took;
    byte i, value;
    short offset, behind;
    bool need, woke, peerGone;
    do
    :: completed == K -> break
    :: else ->
        burst = 0;
        do
        :: submitted < K && inFlight < N ->
            /* the descriptor's fields, then its flags (release): available for this lap */
            published++;
            store(DRIVER, SLOT(nextAvailable), AVAILABLE(WRAP(nextAvailable)));
            nextAvailable = (nextAvailable + 1) % M;
            inFlight++; submitted++; burst++; moved++
        :: burst > 0 -> break
        :: !(submitted < K && inFlight < N) -> break
        od;
        notifyIfNeeded(DRIVER, nextAvailable, lastNotifyCheck, moved, DEVICE_EVENT, kickPending);
        took = 0;
        do
        :: inFlight > 0 ->
            /* takeUsed(): the descriptor at nextUsed, flags read once (acquire) */
            load(DRIVER, SLOT(nextUsed), value);
            if
            :: value == USED(WRAP(nextUsed)) ->
                assert(completed < usedTotal);   /* never a stale flag from an earlier lap */
                nextUsed = (nextUsed + 1) % M;
                inFlight--; took++; completed++
            :: else -> break
            fi;
            value = 0
        :: else -> break
        od;
        if
        :: took == 0 && burst == 0 && inFlight > 0 ->
            waitForPeer(DRIVER, nextUsed, USED(WRAP(nextUsed)), DRIVER_EVENT, interruptPending, false)
        :: else -> skip
        fi
    od;
    driverClosed = true
}

/* The device: wait for a request, use every available one in order, then notifyIfNeeded. */
active proctype Device() {
    byte nextAvailable, nextUsed, lastNotifyCheck, moved, consumed;
    byte i, value;
    short offset, behind;
    bool need, woke, peerGone;
    do
    :: waitForPeer(DEVICE, nextAvailable, AVAILABLE(WRAP(nextAvailable)), DEVICE_EVENT, kickPending, driverClosed);
        if
        :: peerGone -> break
        :: else -> skip
        fi;
        do
        :: load(DEVICE, SLOT(nextAvailable), value);
            if
            :: value == AVAILABLE(WRAP(nextAvailable)) ->
                assert(consumed < published);   /* never a stale flag from an earlier lap */
                nextAvailable = (nextAvailable + 1) % M;
                consumed++;
                /* complete(): the used descriptor, flags last (release), over the one taken */
                usedTotal++;
                store(DEVICE, SLOT(nextUsed), USED(WRAP(nextUsed)));
                nextUsed = (nextUsed + 1) % M;
                moved++
            :: else -> break
            fi;
            value = 0
        od;
        notifyIfNeeded(DEVICE, nextUsed, lastNotifyCheck, moved, DRIVER_EVENT, interruptPending)
    od
}

init {
    atomic {
#if EVENT_IDX
        /* Under EVENT_IDX each side starts armed at its position 0 (wrap 1), as the queues write
         * it when they are built (docs/wire-format.md §12.5, "Starting"); without it the zeroed
         * structures read ENABLE. */
        mem[DRIVER_EVENT] = EVENT_DESC(0);
        mem[DEVICE_EVENT] = EVENT_DESC(0);
#endif
        run StoreBuffer(DRIVER);
        run StoreBuffer(DEVICE)
    }
}

/* No lost wake-up: every chain the driver submits comes back (under weak fairness). */
ltl allChainsReturn { <> (completed == K) }
