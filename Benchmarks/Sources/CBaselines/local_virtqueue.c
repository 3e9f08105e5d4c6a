// A hand-written split virtqueue in C, for the in-process cycle: the same wire format as the
// Swift core (virtio 1.x descriptor table, available and used rings, buffers in a data area).
//
// Two levels of checks (docs/performance.md, "What the C virtqueues check"):
// - minimal: what a careful C device checks to stay inside its memory and not spin for ever:
//   avail.idx at most N ahead, head and next below N, every buffer inside the data area, at
//   most N descriptors per chain (as in seL4's libvirtqueue); the driver checks that a used id is
//   below N. The device uses each segment as soon as its descriptor passes. The one-segment
//   cycle (`vqb_local_virtqueue_cycle`) is this device refusing any chained descriptor; the
//   chain cycle walks chains of any length.
// - full: the validation the Swift core makes. The device checks the whole chain (also no
//   indirect descriptor, readable segments before writable ones, a head it is not already
//   serving) into a private segment list before it uses any of it, and completes no more than
//   the chain's writable bytes; the driver also checks used.idx at most N ahead, that the used
//   id names a chain in flight, and that the used length fits the chain's writable bytes.
// Both read each descriptor and used element once, into a local copy, before checking it.
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
    // Chain cycle only. Driver-private, per head: the chain's last descriptor, its length and the
    // bytes the device may write (length 0: not in flight). Device-private: the validated
    // segments of the chain being served.
    struct vqb_chain_record *chains;
    struct vqb_segment *segments;
    // Full checks only, device-private: 1 for a head the device has taken and not completed.
    uint8_t *device_in_flight;
};

struct vqb_chain_record {
    uint16_t tail;
    uint16_t count;
    uint32_t writable;
};

struct vqb_segment {
    unsigned char *bytes;
    uint32_t length;
    uint32_t writable;
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
    queue->chains = calloc(size, sizeof(struct vqb_chain_record));
    queue->segments = calloc(size, sizeof(struct vqb_segment));
    queue->device_in_flight = calloc(size, sizeof(uint8_t));
    if (queue->next_free == NULL || queue->chains == NULL || queue->segments == NULL ||
        queue->device_in_flight == NULL) {
        vqb_local_virtqueue_destroy(queue);
        return NULL;
    }
    for (unsigned i = 0; i < size; i++) queue->next_free[i] = (uint16_t)(i + 1);
    queue->free_count = (uint16_t)(size > 65535 ? 65535 : size);
    return queue;
}

void vqb_local_virtqueue_destroy(vqb_local_virtqueue *queue) {
    if (queue == NULL) return;
    free(queue->device_in_flight);
    free(queue->segments);
    free(queue->chains);
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

enum { VQB_F_NEXT = 1, VQB_F_WRITE = 2, VQB_F_INDIRECT = 4 };

/// The device's work on one segment: touch a readable one (adding its sequence number to `*sum`),
/// answer `*sum` in the first writable one of 8 bytes or more. Returns -1 for a readable segment
/// too short to hold a message.
static inline __attribute__((always_inline)) int serve_segment(unsigned char *bytes, uint32_t length,
                                                               uint32_t is_writable, uint64_t *sum,
                                                               uint32_t *written, uint64_t *corrupt) {
    if (!is_writable) {
        if (length < 16) return -1;
        *sum += vqb_touch_message(bytes, length, corrupt);
    } else if (*written == 0 && length >= 8) {
        memcpy(bytes, sum, sizeof *sum);
        *written = 8;
    }
    return 0;
}

/// The chain cycle: `readable` (at least 1) device-readable segments of `payload` bytes (the
/// message written in each) and `writable` (0 or 1) device-writable ones, into which the device
/// writes the 8-byte sum of the sequence numbers it read, which the driver reads back. Inlined
/// with constant arguments, so each variant is compiled for its shape and level of checks. A
/// failed cycle leaves the queue unusable (it returns UINT64_MAX mid-cycle).
static inline __attribute__((always_inline)) uint64_t chain_cycle(vqb_local_virtqueue *queue, uint64_t iterations,
                                                                  size_t payload, unsigned readable,
                                                                  unsigned writable, int full) {
    unsigned count = readable + writable;
    if (payload < 16 || payload > queue->buffer_size || readable == 0 || writable > 1 || count > queue->size)
        return UINT64_MAX;
    uint64_t checksum = 0, corrupt = 0;
    // The geometry is fixed at creation: kept in registers, as a C implementation keeps it.
    unsigned char *const region = queue->region;
    struct vqb_descriptor *const descriptors = queue->descriptors;
    uint16_t *const available_ring = queue->available_ring;
    struct vqb_used_element *const used_ring = queue->used_ring;
    _Atomic uint16_t *const available_index = queue->available_index;
    _Atomic uint16_t *const used_index = queue->used_index;
    uint16_t *const next_free = queue->next_free;
    struct vqb_chain_record *const chains = queue->chains;
    struct vqb_segment *const private_segments = queue->segments;
    uint8_t *const device_in_flight = queue->device_in_flight;
    const uint16_t size = queue->size, mask = queue->mask;
    const uint64_t data_offset = queue->data_offset, buffer_size = queue->buffer_size;
    const uint64_t data_end = data_offset + queue->data_size;
    for (uint64_t i = 0; i < iterations; i++) {
        // Driver: take `count` descriptors from the free list (already linked in order there),
        // each with its own buffer; write the readable ones' payload in place; publish the head.
        if (queue->free_count < count) return UINT64_MAX;
        uint16_t head = queue->free_head, index = head, tail = head;
        for (unsigned s = 0; s < count; s++) {
            uint64_t address = data_offset + (uint64_t)index * buffer_size;
            uint16_t next = next_free[index];
            uint16_t flags = s + 1 < count ? VQB_F_NEXT : 0;
            if (s < readable) vqb_write_message(region + address, payload, i, 1);
            else flags |= VQB_F_WRITE;
            descriptors[index] =
                (struct vqb_descriptor){address, (uint32_t)payload, flags, s + 1 < count ? next : 0};
            tail = index;
            index = next;
        }
        queue->free_head = index;
        queue->free_count = (uint16_t)(queue->free_count - count);
        chains[head] = (struct vqb_chain_record){tail, (uint16_t)count, (uint32_t)(writable * payload)};
        available_ring[queue->next_available & mask] = head;
        atomic_store_explicit(available_index, ++queue->next_available, memory_order_release);

        // Device: read avail.idx once and the head; walk the chain, reading each descriptor once
        // and checking it before keeping it in the private segment list.
        uint16_t available = atomic_load_explicit(available_index, memory_order_acquire);
        if (available == queue->last_available || (uint16_t)(available - queue->last_available) > size)
            return UINT64_MAX;
        uint16_t taken = available_ring[queue->last_available & mask];
        if (taken >= size || (full && device_in_flight[taken])) return UINT64_MAX;
        if (full) device_in_flight[taken] = 1;
        // Minimal: each segment is used as soon as its descriptor passes (a chain is served up to
        // its first bad descriptor). Full: the whole chain is checked and kept in the private
        // segment list before any of it is used, as the Swift core hands over only whole valid
        // chains.
        unsigned segments = 0;
        uint32_t after_writable = 0, written = 0;
        uint64_t sum = 0, capacity = 0;
        for (uint16_t at = taken;;) {
            // At most N descriptors (a loop): the private segment list's size.
            if (segments == size) return UINT64_MAX;
            struct vqb_descriptor descriptor = descriptors[at];
            if (descriptor.addr < data_offset || descriptor.len > data_end ||
                descriptor.addr > data_end - descriptor.len)
                return UINT64_MAX;
            uint32_t is_writable = descriptor.flags & VQB_F_WRITE;
            if (full) {
                if ((descriptor.flags & VQB_F_INDIRECT) != 0 || (after_writable && !is_writable)) return UINT64_MAX;
                after_writable |= is_writable;
                if (is_writable) capacity += descriptor.len;
                private_segments[segments] =
                    (struct vqb_segment){region + descriptor.addr, descriptor.len, is_writable};
            } else if (serve_segment(region + descriptor.addr, descriptor.len, is_writable, &sum, &written,
                                     &corrupt) != 0) {
                return UINT64_MAX;
            }
            segments++;
            if ((descriptor.flags & VQB_F_NEXT) == 0) break;
            if (descriptor.next >= size) return UINT64_MAX;
            at = descriptor.next;
        }
        for (unsigned s = 0; full && s < segments; s++) {
            struct vqb_segment segment = private_segments[s];
            if (serve_segment(segment.bytes, segment.length, segment.writable, &sum, &written, &corrupt) != 0)
                return UINT64_MAX;
        }
        if (full) {
            // The device's own completion: no more than the chain's writable bytes, once.
            if (written > capacity) return UINT64_MAX;
            device_in_flight[taken] = 0;
        }
        queue->last_available++;
        used_ring[queue->next_used & mask] = (struct vqb_used_element){taken, written};
        atomic_store_explicit(used_index, ++queue->next_used, memory_order_release);

        // Driver: read used.idx once and the element; check the id (and, fully, that it names a
        // chain in flight and that its length fits); read the reply; free the chain at once.
        uint16_t used = atomic_load_explicit(used_index, memory_order_acquire);
        if (used == queue->last_used || (full && (uint16_t)(used - queue->last_used) > size))
            return UINT64_MAX;
        struct vqb_used_element element = used_ring[queue->last_used & mask];
        if (element.id >= size) return UINT64_MAX;
        struct vqb_chain_record chain = chains[element.id];
        if (full && (chain.count == 0 || element.len > chain.writable)) return UINT64_MAX;
        queue->last_used++;
        if (writable == 0) {
            checksum += sum;
        } else if (element.len >= 8) {
            uint64_t reply;
            // The writable segment is the chain's last descriptor, whose buffer the driver owns.
            memcpy(&reply, region + data_offset + (uint64_t)chain.tail * buffer_size,
                   sizeof reply);
            checksum += reply;
        }
        next_free[chain.tail] = queue->free_head;
        queue->free_head = (uint16_t)element.id;
        queue->free_count = (uint16_t)(queue->free_count + chain.count);
        if (full) chains[element.id].count = 0;
    }
    return corrupt == 0 ? checksum : UINT64_MAX;
}

uint64_t vqb_local_virtqueue_chain_cycle(vqb_local_virtqueue *queue, uint64_t iterations, size_t payload,
                                         unsigned readable, unsigned writable, vqb_checks checks) {
    // The benchmarked shapes get a copy each, compiled for their constants.
    int full = checks == VQB_CHECKS_FULL;
    if (readable == 1 && writable == 0 && full) return chain_cycle(queue, iterations, payload, 1, 0, 1);
    if (readable == 2 && writable == 1 && full) return chain_cycle(queue, iterations, payload, 2, 1, 1);
    if (readable == 2 && writable == 1) return chain_cycle(queue, iterations, payload, 2, 1, 0);
    return chain_cycle(queue, iterations, payload, readable, writable, full);
}
