// A hand-written split virtqueue in C, for the in-process cycle: the same wire format as the
// Swift core (virtio 1.x descriptor table, available and used rings, buffers in a data area)
// with the minimal checks a careful C device makes (head and used id below N, buffer inside
// the data area), as in seL4's libvirtqueue. It shows what the protocol itself costs, apart
// from the Swift core's full validation and bookkeeping.
#include "CBaselines.h"
#include "spsc_ring.h"
#include "vq_layout.h"

#include <stdlib.h>

struct vqb_local_virtqueue {
    // Shared memory: one allocation, rings and buffers at offsets, like a region.
    unsigned char *region;
    struct vqb_descriptor *descriptors;
    _Atomic uint16_t *available_index;
    uint16_t *available_ring;
    _Atomic uint16_t *used_index;
    struct vqb_used_element *used_ring;
    size_t data_offset;
    size_t data_size;
    uint16_t size;
    uint16_t mask;
    size_t buffer_size;
    // Driver-private state.
    uint16_t *next_free;
    uint16_t free_head;
    uint16_t free_count;
    uint16_t next_available;
    uint16_t last_used;
    // Device-private state.
    uint16_t last_available;
    uint16_t next_used;
};

vqb_local_virtqueue *vqb_local_virtqueue_create(unsigned size, size_t buffer_size) {
    if (size == 0 || size > 32768 || (size & (size - 1)) != 0 || buffer_size < 16) return NULL;
    vqb_local_virtqueue *queue = calloc(1, sizeof *queue);
    if (queue == NULL) return NULL;
    queue->data_size = (size_t)size * buffer_size;
    struct vqb_vq_layout layout = vqb_vq_layout_make(size, queue->data_size);
    if (posix_memalign((void **)&queue->region, VQB_CACHE_LINE, layout.bytes) != 0) {
        free(queue);
        return NULL;
    }
    memset(queue->region, 0, layout.bytes);
    queue->descriptors = (struct vqb_descriptor *)queue->region;
    queue->available_index = (_Atomic uint16_t *)(queue->region + layout.available + 2);
    queue->available_ring = (uint16_t *)(queue->region + layout.available + 4);
    queue->used_index = (_Atomic uint16_t *)(queue->region + layout.used + 2);
    queue->used_ring = (struct vqb_used_element *)(queue->region + layout.used + 4);
    queue->data_offset = layout.data;
    queue->size = (uint16_t)size;
    queue->mask = (uint16_t)(size - 1);
    queue->buffer_size = buffer_size;
    queue->next_free = calloc(size, sizeof(uint16_t));
    if (queue->next_free == NULL) {
        free(queue->region);
        free(queue);
        return NULL;
    }
    for (unsigned i = 0; i < size; i++) queue->next_free[i] = (uint16_t)(i + 1);
    queue->free_count = (uint16_t)(size > 65535 ? 65535 : size);
    return queue;
}

void vqb_local_virtqueue_destroy(vqb_local_virtqueue *queue) {
    if (queue == NULL) return;
    free(queue->next_free);
    free(queue->region);
    free(queue);
}

uint64_t vqb_local_virtqueue_cycle(vqb_local_virtqueue *queue, uint64_t iterations, size_t payload) {
    if (payload < 16 || payload > queue->buffer_size) return UINT64_MAX;
    uint64_t checksum = 0, corrupt = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        // Driver: take a descriptor (buffer i of the pool belongs to descriptor i), write the
        // payload in place, publish the head.
        if (queue->free_count == 0) return UINT64_MAX;
        uint16_t head = queue->free_head;
        queue->free_head = queue->next_free[head];
        queue->free_count--;
        uint64_t address = queue->data_offset + (uint64_t)head * queue->buffer_size;
        vqb_write_message(queue->region + address, payload, i, 1);
        queue->descriptors[head] = (struct vqb_descriptor){address, (uint32_t)payload, 0, 0};
        queue->available_ring[queue->next_available & queue->mask] = head;
        atomic_store_explicit(queue->available_index, ++queue->next_available, memory_order_release);

        // Device: read avail.idx once, the head, the descriptor; check them; touch; complete.
        uint16_t available = atomic_load_explicit(queue->available_index, memory_order_acquire);
        if (available == queue->last_available || (uint16_t)(available - queue->last_available) > queue->size)
            return UINT64_MAX;
        uint16_t taken = queue->available_ring[queue->last_available & queue->mask];
        if (taken >= queue->size) return UINT64_MAX;
        struct vqb_descriptor descriptor = queue->descriptors[taken];
        if (descriptor.addr < queue->data_offset || descriptor.len > queue->data_offset + queue->data_size ||
            descriptor.addr > queue->data_offset + queue->data_size - descriptor.len || (descriptor.flags & 1) != 0)
            return UINT64_MAX;
        checksum += vqb_touch_message(queue->region + descriptor.addr, descriptor.len, &corrupt);
        queue->last_available++;
        queue->used_ring[queue->next_used & queue->mask] = (struct vqb_used_element){taken, 0};
        atomic_store_explicit(queue->used_index, ++queue->next_used, memory_order_release);

        // Driver: read used.idx once and the element; check the id; free the descriptor.
        uint16_t used = atomic_load_explicit(queue->used_index, memory_order_acquire);
        if (used == queue->last_used) return UINT64_MAX;
        struct vqb_used_element element = queue->used_ring[queue->last_used & queue->mask];
        if (element.id >= queue->size) return UINT64_MAX;
        queue->last_used++;
        queue->next_free[element.id] = queue->free_head;
        queue->free_head = (uint16_t)element.id;
        queue->free_count++;
    }
    return corrupt == 0 ? checksum : UINT64_MAX;
}
