// Baselines for the swift-virtqueue benchmarks: a plain single-producer single-consumer ring in
// shared memory, a pipe and an AF_UNIX socketpair, driven by the same workloads as the queues.
//
// Cross-process runs fork(): the child only makes async-signal-safe calls (memory accesses,
// read/write on its file descriptors, sched_setaffinity, clock_gettime, _exit), and every
// buffer it touches is mapped before the fork, so forking a multithreaded Swift process is safe.
#ifndef VQB_BASELINES_H
#define VQB_BASELINES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// How a side waits for its peer.
///
/// `spins < 0`: poll for ever (busy-poll); `spins == 0`: sleep on an eventfd at once;
/// `spins > 0`: poll that many times, then sleep on an eventfd.
/// Pipes and sockets ignore it: they block in read().
typedef enum {
    VQB_RING = 0,
    VQB_PIPE = 1,
    VQB_SOCKETPAIR = 2,
    /// The hand-written C virtqueue of `local_virtqueue.c` across processes (throughput only):
    /// the parent drives, the child is the device, with the C ring's spin-then-sleep wake-ups.
    VQB_VIRTQUEUE = 3,
} vqb_transport;

/// What the producer writes into each message.
typedef enum {
    /// Every byte of the message (the payload is produced in place, once).
    VQB_FILL_ALL = 0,
    /// Only the 8-byte header and the last byte: the payload is already there (zero-copy send).
    VQB_FILL_HEADER = 1,
} vqb_fill;

/// Round trips per group for `median_group_nanoseconds`.
#define VQB_GROUP 64

/// Returns the median of `count` values (reordering them); 0 for none.
uint64_t vqb_median(uint64_t *values, size_t count);

/// The outcome of one measured run.
typedef struct {
    /// Messages (or round trips) completed.
    uint64_t operations;
    /// Wall-clock nanoseconds from the start signal to the last message consumed (or reply received).
    uint64_t nanoseconds;
    /// The median time of a group of consecutive operations, times the number of groups (0 if
    /// fewer than one group ran): round trips in groups of `VQB_GROUP`, throughput in groups of
    /// `group_size` messages timed as the producer sends them. Unlike `nanoseconds`, it does not
    /// move when another process takes one of the two CPUs for a while.
    uint64_t median_group_nanoseconds;
    /// The operations per group, and the number of groups timed.
    uint64_t group_size;
    uint64_t groups;
    /// Wake-ups sent by either side: eventfd writes for the ring, write() calls for pipes and sockets.
    uint64_t kicks;
    /// Sum of the sequence numbers the consumer saw; the caller checks it.
    uint64_t checksum;
    /// Messages whose contents did not match what was sent.
    uint64_t corrupt;
    /// 0, or the errno of the call that failed.
    int error;
} vqb_result;

/// Cross-process throughput: the parent produces `messages` messages of `message_size` bytes
/// (at least 16), publishing (or writing) every `batch` messages; a forked child consumes them.
/// The parent runs on `producer_cpu`, the child on `consumer_cpu` (-1: no pinning).
/// For the ring, `ring_slots` (a power of two) slots of `message_size` bytes rounded to 64; for
/// the C virtqueue, a queue of `ring_slots` entries, each with a buffer of that size.
vqb_result vqb_throughput(
    vqb_transport transport, size_t message_size, size_t batch, uint64_t messages,
    unsigned ring_slots, int spins, int producer_cpu, int consumer_cpu);

/// Cross-process round trip: the parent sends a `message_size`-byte request (written as `fill`
/// says), the forked child reads its header and last byte and answers with a 16-byte completion
/// `{sequence, length}`; the parent waits for it. `round_trips` times.
vqb_result vqb_round_trip(
    vqb_transport transport, size_t message_size, uint64_t round_trips, vqb_fill fill,
    int spins, int requester_cpu, int responder_cpu);

/// An in-process ring, both ends driven by the calling thread.
typedef struct vqb_local_ring vqb_local_ring;

/// Creates an in-process ring of `slots` (a power of two) slots of `slot_size` bytes; NULL on failure.
vqb_local_ring *vqb_local_ring_create(unsigned slots, size_t slot_size);
void vqb_local_ring_destroy(vqb_local_ring *ring);

/// The in-process equivalent of one virtqueue cycle, `iterations` times: the producer writes a
/// `payload`-byte message in place and publishes it, the consumer takes it, touches it (reads its
/// header and last byte) and releases the slot, which the producer sees before reusing it.
/// Returns the consumer's checksum (the sum of the sequence numbers), or UINT64_MAX if a message
/// did not arrive intact.
uint64_t vqb_local_ring_cycle(vqb_local_ring *ring, uint64_t iterations, size_t payload);

/// An in-process split virtqueue written by hand in C (same wire format as the Swift core, the
/// minimal checks of a careful C device), both ends driven by the calling thread.
typedef struct vqb_local_virtqueue vqb_local_virtqueue;

/// Creates a queue of `size` entries (a power of two) with one `buffer_size`-byte buffer per
/// descriptor; NULL on failure.
vqb_local_virtqueue *vqb_local_virtqueue_create(unsigned size, size_t buffer_size);
void vqb_local_virtqueue_destroy(vqb_local_virtqueue *queue);

/// The virtqueue cycle, `iterations` times: the driver takes a descriptor, writes a `payload`-byte
/// message in place, publishes the head; the device reads the head and descriptor, checks them,
/// touches the message and completes it through the used ring; the driver reads the used element,
/// checks its id and frees the descriptor. Returns the checksum, or UINT64_MAX on failure.
uint64_t vqb_local_virtqueue_cycle(vqb_local_virtqueue *queue, uint64_t iterations, size_t payload);

/// How much of the peer's data the chain cycle checks (docs/performance.md, "What the C
/// virtqueues check").
typedef enum {
    /// What keeps a C device inside its memory: head, next and used id below N, buffers inside
    /// the data area, avail.idx at most N ahead, at most N descriptors per chain.
    VQB_CHECKS_MINIMAL = 0,
    /// The Swift core's validation: also readable before writable, no indirect descriptor, a
    /// head the device is not already serving, the whole chain checked before any of it is used,
    /// used.idx at most N ahead, a used id in flight, a used length no larger than the chain's
    /// writable bytes.
    VQB_CHECKS_FULL = 1,
} vqb_checks;

/// The C virtqueue stream of `vqb_throughput` with the device in a process of its own, started
/// with posix_spawn of `executable` with the arguments `c-device` (the program then calls
/// `vqb_virtqueue_device_process`), as the Swift shared-memory backend starts its device: so a
/// wrapper that runs it under valgrind can count the device's instructions alone. The driver
/// waits as `driver_spins` says, the device as `device_spins`; the device is pinned to
/// `device_cpu` (-1: no pinning), this thread is not pinned. The device checks what `checks`
/// says: the minimal checks of a careful C device, or the Swift core's (walking each chain,
/// recording the heads it serves, keeping each chain's segments privately before using them).
vqb_result vqb_virtqueue_stream_spawned(const char *executable, size_t message_size, size_t batch, uint64_t messages,
                                        unsigned slots, int driver_spins, int device_spins, int device_cpu,
                                        vqb_checks checks);

/// The device's side of `vqb_virtqueue_stream_spawned`, in the spawned process: serves the stream
/// described in the shared memory it inherited, then returns 0 or an errno.
int vqb_virtqueue_device_process(void);

/// The virtqueue cycle over chains, `iterations` times: the driver builds a chain of `readable`
/// (at least 1) readable `payload`-byte segments, each holding the message, and `writable` (0 or
/// 1) writable ones; the device walks and checks the chain, touches the readable segments and
/// writes the 8-byte sum of their sequence numbers into the writable one; the driver checks the
/// used element, reads that reply and frees the chain. `readable` 2 and `writable` 1 is the
/// Swift `three` cycle. Returns the checksum (the device's sums without a writable segment, the
/// replies with one), or UINT64_MAX on failure.
uint64_t vqb_local_virtqueue_chain_cycle(vqb_local_virtqueue *queue, uint64_t iterations, size_t payload,
                                         unsigned readable, unsigned writable, vqb_checks checks);

/// CLOCK_MONOTONIC in nanoseconds.
uint64_t vqb_now_ns(void);

/// Pins the calling thread to `cpu`; returns 0 or an errno.
int vqb_pin_to_cpu(int cpu);

/// Pins process (thread) `pid` to `cpu`, as root or its owner may; returns 0 or an errno. For a
/// sandboxed child, whose filter forbids sched_setaffinity.
int vqb_pin_process(int pid, int cpu);

/// Lets the calling thread run on every CPU (threads and processes it starts inherit that), for
/// the queue-scaling scenario (Sources/VirtqueueBench/QueueScaling.swift). Returns 0, or errno.
int vqb_unpin_thread(void);

#ifdef __cplusplus
}
#endif

#endif
