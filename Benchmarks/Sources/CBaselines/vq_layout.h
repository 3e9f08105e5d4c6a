// The split-virtqueue layout both C virtqueue baselines use (in-process, local_virtqueue.c, and
// across processes, cross_process.c): virtio 1.x descriptors and used elements, and one queue's
// areas in a region — descriptor table, available ring, used ring, data area — each starting
// on a cache line, as the Swift core lays them out.
#ifndef VQB_VQ_LAYOUT_H
#define VQB_VQ_LAYOUT_H

#include "spsc_ring.h"

#include <stddef.h>
#include <stdint.h>

struct vqb_descriptor {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct vqb_used_element {
    uint32_t id;
    uint32_t len;
};

/// Byte offsets of a queue of `size` entries whose data area holds `data_size` bytes.
struct vqb_vq_layout {
    size_t available;
    size_t used;
    size_t data;
    size_t bytes;
};

static inline struct vqb_vq_layout vqb_vq_layout_make(unsigned size, size_t data_size) {
    struct vqb_vq_layout layout;
    layout.available = vqb_round_slot(16 * (size_t)size);
    layout.used = vqb_round_slot(layout.available + 6 + 2 * (size_t)size);
    layout.data = vqb_round_slot(layout.used + 6 + 8 * (size_t)size);
    layout.bytes = layout.data + data_size;
    return layout;
}

#endif
