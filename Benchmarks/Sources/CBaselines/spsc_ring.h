// A plain single-producer single-consumer ring in shared memory: the limit the virtqueue is
// measured against. Two free-running 32-bit indices on separate cache lines, fixed-size slots,
// release on publish, acquire on read, and an optional eventfd wake-up for a side that sleeps.
#ifndef VQB_SPSC_RING_H
#define VQB_SPSC_RING_H

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define VQB_CACHE_LINE 64

/// The part of the ring both processes map. Each line is written by one side only.
struct vqb_ring_shared {
    /// Written by the producer: the next slot it will fill, and whether it sleeps for space.
    _Alignas(VQB_CACHE_LINE) _Atomic uint32_t tail;
    _Atomic uint32_t producer_sleeping;
    /// Written by the consumer: the next slot it will take, and whether it sleeps for messages.
    _Alignas(VQB_CACHE_LINE) _Atomic uint32_t head;
    _Atomic uint32_t consumer_sleeping;
    _Alignas(VQB_CACHE_LINE) unsigned char slots[];
};

/// One side's private view.
struct vqb_ring_end {
    struct vqb_ring_shared *shared;
    uint32_t mask;
    uint32_t size;
    size_t slot_size;
    /// Producer: next tail; consumer: next head.
    uint32_t own;
    /// The peer's index as last read.
    uint32_t peer_cache;
    /// Kicks the peer; waited on when this side sleeps (-1: none).
    int kick_fd;
    int wait_fd;
    int spins;
    uint64_t kicks;
};

static inline size_t vqb_ring_bytes(uint32_t slots, size_t slot_size) {
    return sizeof(struct vqb_ring_shared) + (size_t)slots * slot_size;
}

static inline size_t vqb_round_slot(size_t size) {
    return (size + VQB_CACHE_LINE - 1) & ~(size_t)(VQB_CACHE_LINE - 1);
}

static inline void vqb_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline unsigned char *vqb_slot(const struct vqb_ring_end *end, uint32_t index) {
    return end->shared->slots + (size_t)(index & end->mask) * end->slot_size;
}

/// Blocks until `changed(context)`: spins `end->spins` times first (forever if negative), then
/// announces sleep through `sleeping`, re-checks, and reads `end->wait_fd`. Shared by the ring's
/// 32-bit indices and the C virtqueue's 16-bit ones (cross_process.c).
static inline void vqb_wait_until(const struct vqb_ring_end *end, _Atomic uint32_t *sleeping,
                                  int (*changed)(const void *), const void *context) {
    if (end->spins < 0) {
        while (!changed(context)) vqb_cpu_relax();
        return;
    }
    for (int i = 0; i < end->spins; i++) {
        if (changed(context)) return;
        vqb_cpu_relax();
    }
    for (;;) {
        atomic_store_explicit(sleeping, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (changed(context)) break;
        uint64_t value;
        ssize_t got = read(end->wait_fd, &value, sizeof value);
        if (got < 0 && errno != EINTR) break;
        if (changed(context)) break;
    }
    atomic_store_explicit(sleeping, 0, memory_order_relaxed);
}

struct vqb_index32 {
    _Atomic uint32_t *index;
    uint32_t seen;
};

static inline int vqb_index32_changed(const void *context) {
    const struct vqb_index32 *index = context;
    return atomic_load_explicit(index->index, memory_order_acquire) != index->seen;
}

/// Blocks until `*index != seen` (see `vqb_wait_until`) and returns the new value.
static inline uint32_t vqb_wait_change(struct vqb_ring_end *end, _Atomic uint32_t *index, uint32_t seen,
                                       _Atomic uint32_t *sleeping) {
    struct vqb_index32 context = {index, seen};
    vqb_wait_until(end, sleeping, vqb_index32_changed, &context);
    return atomic_load_explicit(index, memory_order_acquire);
}

/// After publishing: wakes the peer if it announced that it sleeps.
static inline void vqb_kick_if_sleeping(struct vqb_ring_end *end, _Atomic uint32_t *peer_sleeping) {
    if (end->spins < 0) return;
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(peer_sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(peer_sleeping, 0, memory_order_relaxed)) {
        uint64_t one = 1;
        while (write(end->kick_fd, &one, sizeof one) < 0 && errno == EINTR) {}
        end->kicks++;
    }
}

// MARK: Producer

/// Returns a slot to write the next message into, waiting for space if the ring is full.
static inline unsigned char *vqb_producer_reserve(struct vqb_ring_end *end) {
    if (end->own - end->peer_cache == end->size) {
        end->peer_cache = atomic_load_explicit(&end->shared->head, memory_order_acquire);
        while (end->own - end->peer_cache == end->size) {
            end->peer_cache = vqb_wait_change(end, &end->shared->head, end->peer_cache,
                                              &end->shared->producer_sleeping);
        }
    }
    return vqb_slot(end, end->own);
}

/// Counts the reserved slot as written (not yet visible).
static inline void vqb_producer_advance(struct vqb_ring_end *end) { end->own++; }

/// Makes every advanced slot visible and wakes a sleeping consumer.
static inline void vqb_producer_publish(struct vqb_ring_end *end) {
    atomic_store_explicit(&end->shared->tail, end->own, memory_order_release);
    vqb_kick_if_sleeping(end, &end->shared->consumer_sleeping);
}

// MARK: Consumer

/// Returns the next message, or NULL if none is published yet.
static inline unsigned char *vqb_consumer_peek(struct vqb_ring_end *end) {
    if (end->own == end->peer_cache) {
        end->peer_cache = atomic_load_explicit(&end->shared->tail, memory_order_acquire);
        if (end->own == end->peer_cache) return NULL;
    }
    return vqb_slot(end, end->own);
}

/// Returns the next message, waiting for one.
static inline unsigned char *vqb_consumer_wait(struct vqb_ring_end *end) {
    while (end->own == end->peer_cache) {
        end->peer_cache = atomic_load_explicit(&end->shared->tail, memory_order_acquire);
        if (end->own != end->peer_cache) break;
        end->peer_cache = vqb_wait_change(end, &end->shared->tail, end->peer_cache,
                                          &end->shared->consumer_sleeping);
    }
    return vqb_slot(end, end->own);
}

/// Counts the taken slot as consumed (not yet released to the producer).
static inline void vqb_consumer_advance(struct vqb_ring_end *end) { end->own++; }

/// Releases every consumed slot and wakes a producer sleeping for space.
static inline void vqb_consumer_release(struct vqb_ring_end *end) {
    atomic_store_explicit(&end->shared->head, end->own, memory_order_release);
    vqb_kick_if_sleeping(end, &end->shared->producer_sleeping);
}

// MARK: Messages

/// Writes message `sequence` of `size` bytes (size >= 16) into `slot`.
static inline void vqb_write_message(unsigned char *slot, size_t size, uint64_t sequence, int fill_all) {
    if (fill_all) memset(slot + 8, (unsigned char)sequence, size - 8);
    else slot[size - 1] = (unsigned char)sequence;
    memcpy(slot, &sequence, sizeof sequence);
}

/// Touches message `slot` of `size` bytes: reads its header and last byte. Returns its sequence
/// number, and adds 1 to `*corrupt` if the last byte does not match.
static inline uint64_t vqb_touch_message(const unsigned char *slot, size_t size, uint64_t *corrupt) {
    uint64_t sequence;
    memcpy(&sequence, slot, sizeof sequence);
    if (slot[size - 1] != (unsigned char)sequence) (*corrupt)++;
    return sequence;
}

#endif
