// The in-process cycle on the plain ring: both ends in one thread, no wake-ups.
#include "CBaselines.h"
#include "spsc_ring.h"

#include <stdlib.h>
#include <time.h>

struct vqb_local_ring {
    struct vqb_ring_end producer;
    struct vqb_ring_end consumer;
    void *memory;
};

vqb_local_ring *vqb_local_ring_create(unsigned slots, size_t slot_size) {
    if (slots == 0 || (slots & (slots - 1)) != 0 || slot_size < 16) return NULL;
    size_t rounded = vqb_round_slot(slot_size);
    void *memory = NULL;
    if (posix_memalign(&memory, VQB_CACHE_LINE, vqb_ring_bytes(slots, rounded)) != 0) return NULL;
    memset(memory, 0, vqb_ring_bytes(slots, rounded));
    vqb_local_ring *ring = calloc(1, sizeof *ring);
    if (ring == NULL) {
        free(memory);
        return NULL;
    }
    struct vqb_ring_end end = {
        .shared = memory, .mask = slots - 1, .size = slots, .slot_size = rounded,
        .kick_fd = -1, .wait_fd = -1, .spins = -1,
    };
    ring->producer = end;
    ring->consumer = end;
    ring->memory = memory;
    return ring;
}

void vqb_local_ring_destroy(vqb_local_ring *ring) {
    if (ring == NULL) return;
    free(ring->memory);
    free(ring);
}

uint64_t vqb_local_ring_cycle(vqb_local_ring *ring, uint64_t iterations, size_t payload) {
    if (payload < 16 || payload > ring->producer.slot_size) return UINT64_MAX;
    struct vqb_ring_end *producer = &ring->producer;
    struct vqb_ring_end *consumer = &ring->consumer;
    uint64_t checksum = 0;
    uint64_t corrupt = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        unsigned char *slot = vqb_producer_reserve(producer);
        vqb_write_message(slot, payload, i, 1);
        vqb_producer_advance(producer);
        vqb_producer_publish(producer);

        const unsigned char *message = vqb_consumer_peek(consumer);
        if (message == NULL) return UINT64_MAX;
        checksum += vqb_touch_message(message, payload, &corrupt);
        vqb_consumer_advance(consumer);
        vqb_consumer_release(consumer);
    }
    return corrupt == 0 ? checksum : UINT64_MAX;
}

uint64_t vqb_now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}
