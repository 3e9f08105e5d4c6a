/*
 * The kick / notification-suppression protocol of swift-virtqueue's split virtqueue, as
 * implemented in Sources/Virtqueue/Internal/Ring.swift (Endpoint) and its callers in
 * DriverQueue, DeviceQueue and DeviceQueue.serve. docs/notification-model.md maps every step
 * to its line of Swift.
 *
 * Two threads share the ring: the driver publishes avail.idx and sleeps on used.idx; the
 * device publishes used.idx and sleeps on avail.idx. Each thread's stores go through a
 * store buffer (x86-TSO): a store becomes visible to the other thread only when the buffer
 * drains it, in order; a thread reads its own buffered stores; a fence waits until its buffer
 * is empty. The notifier (HeapNotifier, eventfd) is one "pending" bit per direction: notify
 * sets it, wait blocks until it is set and clears it, so a notification sent before the wait
 * is not lost and several merge into one wake-up. Both are system calls or locked
 * instructions, which drain the caller's store buffer.
 *
 * Build options (spin -D...):
 *   N          queue size (default 2)
 *   M          index modulus: the 16-bit free-running counters, scaled down (default 4 = 2N)
 *   K          chains the driver sends in all (default 6)
 *   EVENT_IDX  1: VIRTIO_F_EVENT_IDX (used_event / avail_event); 0: the NO_NOTIFY /
 *              NO_INTERRUPT flags (default 1)
 * Mutants, each of which must make the check fail:
 *   NO_RECHECK        waitForPeer does not re-read the peer's index after enabling
 *   NO_ENABLE_FENCE   enableNotifications has no full fence after its store
 *   NO_PUBLISH_FENCE  peerNeedsNotification has no full fence before reading the peer's
 *                     event / flags
 *   NO_WRAP_GUARD     notifyIfNeeded trusts 16-bit index arithmetic even after 2^16 moves
 *                     since the last check (the code before the fix of this model's finding)
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

/* Shared ring fields (the avail ring's are written by the driver, the used ring's by the device). */
#define AVAIL_IDX   0
#define AVAIL_FLAGS 1    /* VIRTQ_AVAIL_F_NO_INTERRUPT */
#define USED_EVENT  2
#define USED_IDX    3
#define USED_FLAGS  4    /* VIRTQ_USED_F_NO_NOTIFY */
#define AVAIL_EVENT 5
#define FIELDS 6

#include "tso.pml"

bool kickPending;        /* driver -> device notifier */
bool interruptPending;   /* device -> driver notifier */
bool driverClosed;       /* DeviceThread.stop(): the device's wait ends with peerDied */

byte completed;          /* chains the driver has taken back */

/*
 * DriverQueue.notifyIfNeeded / DeviceQueue.notifyIfNeeded, with
 * Endpoint.peerNeedsNotification(new:old:in:) inside. `index` is the side's own published
 * index, `moved` how many times it moved since the last check.
 */
inline notifyIfNeeded(who, index, lastCheck, moved, peerEvent, peerFlags, pending) {
    new = index;
    old = lastCheck;
    lastCheck = new;
    if
#ifndef NO_WRAP_GUARD
    :: moved >= M -> need = true          /* too far to compare 16-bit indices: notify */
#endif
    :: else ->
        if
        :: new == old -> need = false
        :: else ->
#ifndef NO_PUBLISH_FENCE
            fence(who);
#endif
#if EVENT_IDX
            load(who, peerEvent, value);
            /* vring_need_event(event, new, old) */
            need = ((new - value - 1 + 2 * M) % M) < ((new - old + M) % M)
#else
            load(who, peerFlags, value);
            need = (value & 1) == 0
#endif
        fi
    fi;
    moved = 0;
    if
    :: need -> fence(who); pending = true   /* notifier.notify() */
    :: else -> skip
    fi;
    need = false; new = 0; old = 0; value = 0
}

/*
 * Endpoint.waitForPeer(lastSeen:spins:notifier:in:): spin, then enable notifications,
 * re-check, and sleep on the notifier until the peer's index moves past lastSeen. Sets
 * peerGone when the wait ended because the peer closed its end (peerDied).
 */
inline waitForPeer(who, lastSeen, peerIndex, ownEvent, ownFlags, pending, closed) {
    if
    :: load(who, peerIndex, value);      /* one spin */
        woke = (value != lastSeen)
    :: skip                              /* spins: 0 */
    fi;
    if
    :: woke -> skip                      /* the spin saw it: return at once */
    :: else ->
        do
        :: /* enableNotifications(lastSeen:in:) */
#if EVENT_IDX
            store(who, ownEvent, lastSeen);
#else
            store(who, ownFlags, 0);
#endif
#ifndef NO_ENABLE_FENCE
            fence(who);
#endif
#ifndef NO_RECHECK
            load(who, peerIndex, value);
            if
            :: value != lastSeen -> break
            :: else -> skip
            fi;
#endif
            /* notifier.wait(): a system call; returns for a pending or new notification */
            fence(who);
            if
            :: atomic { pending -> pending = false }
            :: closed -> peerGone = true; break
            fi;
            load(who, peerIndex, value);
            if
            :: value != lastSeen -> break
            :: else -> skip
            fi
        od;
        /* disableNotifications(in:), skipped when wait() threw */
#if !EVENT_IDX
        if
        :: !peerGone -> store(who, ownFlags, 1)
        :: else -> skip
        fi;
#endif
        skip
    fi;
    woke = false;
    value = 0
}

/*
 * The driver's loop, as in Tests/VirtqueueHeapTests/HeapStressTests.swift: submit a burst,
 * notifyIfNeeded, take back what is done, and wait only when it neither submitted nor took.
 */
active proctype Driver() {
    byte nextAvailable, lastNotifyCheck, lastUsed, moved;
    byte inFlight, submitted, burst, took;
    byte i, new, old, value;
    bool need, woke, peerGone;
    do
    :: completed == K -> break
    :: else ->
        burst = 0;
        do
        :: submitted < K && inFlight < N ->
            /* submit(): descriptors, ring entry, then publish avail.idx (release) */
            nextAvailable = (nextAvailable + 1) % M;
            store(DRIVER, AVAIL_IDX, nextAvailable);
            inFlight++; submitted++; burst++; moved++
        :: burst > 0 -> break
        :: !(submitted < K && inFlight < N) -> break
        od;
        notifyIfNeeded(DRIVER, nextAvailable, lastNotifyCheck, moved, AVAIL_EVENT, USED_FLAGS, kickPending);
        took = 0;
        do
        :: /* takeUsed(): load used.idx (acquire) */
            load(DRIVER, USED_IDX, value);
            if
            :: value != lastUsed ->
                assert(inFlight > 0 && (value - lastUsed + M) % M <= inFlight);
                lastUsed = (lastUsed + 1) % M;
                inFlight--; took++; completed++
            :: else -> break
            fi;
            value = 0
        od;
        if
        :: took == 0 && burst == 0 && inFlight > 0 ->
            /* waitForUsed(): sleep until used.idx moves */
            waitForPeer(DRIVER, lastUsed, USED_IDX, USED_EVENT, AVAIL_FLAGS, interruptPending, false)
        :: else -> skip
        fi
    od;
    /* device.stop(): close the driver's end of the notifier */
    driverClosed = true
}

/* DeviceQueue.serve: wait for requests, serve every available one, then notifyIfNeeded. */
active proctype Device() {
    byte lastAvailable, nextUsed, lastNotifyCheck, moved;
    byte i, new, old, value;
    bool need, woke, peerGone;
    do
    :: /* waitForRequests(): sleep until avail.idx moves; ends when the driver has gone */
        waitForPeer(DEVICE, lastAvailable, AVAIL_IDX, AVAIL_EVENT, USED_FLAGS, kickPending, driverClosed);
        if
        :: peerGone -> break
        :: else -> skip
        fi;
        do
        :: /* nextRequest(): load avail.idx (acquire) */
            load(DEVICE, AVAIL_IDX, value);
            if
            :: value != lastAvailable ->
                assert((value - lastAvailable + M) % M <= N);
                lastAvailable = (lastAvailable + 1) % M;
                /* complete(): used element, then publish used.idx (release) */
                nextUsed = (nextUsed + 1) % M;
                store(DEVICE, USED_IDX, nextUsed);
                moved++
            :: else -> break
            fi;
            value = 0
        od;
        notifyIfNeeded(DEVICE, nextUsed, lastNotifyCheck, moved, USED_EVENT, AVAIL_FLAGS, interruptPending)
    od
}

init {
    atomic {
        run StoreBuffer(DRIVER);
        run StoreBuffer(DEVICE)
    }
}

/* No lost wake-up: every chain the driver submits comes back (under weak fairness). */
ltl allChainsReturn { <> (completed == K) }
