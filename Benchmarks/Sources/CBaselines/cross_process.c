// Cross-process baselines: the same throughput and round-trip workloads over the plain ring in
// shared memory, a pipe and an AF_UNIX socketpair, with the two processes pinned to two CPUs;
// and a throughput stream over the hand-written C virtqueue.
#define _GNU_SOURCE
#include "CBaselines.h"
#include "spsc_ring.h"
#include "vq_layout.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/// Shared between the parent and the child: a start barrier and the child's results.
struct vqb_control {
    _Alignas(VQB_CACHE_LINE) _Atomic uint32_t child_ready;
    _Alignas(VQB_CACHE_LINE) _Atomic uint32_t go;
    _Alignas(VQB_CACHE_LINE) uint64_t end_ns;
    uint64_t checksum;
    uint64_t corrupt;
    uint64_t kicks;
    int error;
    /// The C virtqueue's "I am about to sleep" words, one per side, each on its own line.
    _Alignas(VQB_CACHE_LINE) _Atomic uint32_t driver_sleeping;
    _Alignas(VQB_CACHE_LINE) _Atomic uint32_t device_sleeping;
    /// What a spawned C virtqueue device (`vqb_virtqueue_device_process`) serves.
    struct {
        uint64_t messages;
        uint64_t size;
        uint32_t slots;
        int32_t spins;
        /// `vqb_checks`: the minimal ones, or the Swift core's.
        int32_t checks;
    } spawned;
};

int vqb_pin_to_cpu(int cpu) {
    if (cpu < 0) return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : errno;
}

int vqb_pin_process(int pid, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(pid, sizeof set, &set) == 0 ? 0 : errno;
}

static void *map_shared(size_t bytes) {
    void *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return NULL;
    memset(memory, 0, bytes);
    return memory;
}

static void *map_private(size_t bytes) {
    void *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return memory == MAP_FAILED ? NULL : memory;
}

/// Touches every page so no page fault lands inside the timed part.
static void prefault(void *memory, size_t bytes) {
    volatile unsigned char *bytes_ = memory;
    for (size_t offset = 0; offset < bytes; offset += 4096) bytes_[offset] = bytes_[offset];
}

static int write_all(int fd, const unsigned char *bytes, size_t count) {
    while (count > 0) {
        ssize_t wrote = write(fd, bytes, count);
        if (wrote < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        bytes += wrote;
        count -= (size_t)wrote;
    }
    return 0;
}

static int read_all(int fd, unsigned char *bytes, size_t count) {
    while (count > 0) {
        ssize_t got = read(fd, bytes, count);
        if (got < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (got == 0) return EPIPE;
        bytes += got;
        count -= (size_t)got;
    }
    return 0;
}

/// The file descriptors and memory of one run; everything is set up before fork().
struct vqb_setup {
    vqb_transport transport;
    struct vqb_control *control;
    size_t control_bytes;
    /// Ring: `forward` carries parent → child, `backward` child → parent (round trip only).
    struct vqb_ring_shared *forward;
    size_t forward_bytes;
    struct vqb_ring_shared *backward;
    size_t backward_bytes;
    /// C virtqueue: the region (descriptor table, rings, data area) and its layout.
    unsigned char *queue;
    struct vqb_vq_layout queue_layout;
    /// Eventfds: kick the child, kick the parent (ring), or the stream ends (pipe, socket):
    /// parent writes to `to_child[1]` and reads `to_parent[0]`; the child the opposite.
    int to_child[2];
    int to_parent[2];
    unsigned char *parent_buffer;
    unsigned char *child_buffer;
    size_t buffer_bytes;
};

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

static void teardown(struct vqb_setup *setup) {
    if (setup->control) munmap(setup->control, setup->control_bytes);
    if (setup->forward) munmap(setup->forward, setup->forward_bytes);
    if (setup->backward) munmap(setup->backward, setup->backward_bytes);
    if (setup->queue) munmap(setup->queue, setup->queue_layout.bytes);
    if (setup->parent_buffer) munmap(setup->parent_buffer, setup->buffer_bytes);
    if (setup->child_buffer) munmap(setup->child_buffer, setup->buffer_bytes);
    close_fd(&setup->to_child[0]);
    close_fd(&setup->to_child[1]);
    close_fd(&setup->to_parent[0]);
    close_fd(&setup->to_parent[1]);
}

/// Maps the control block, the rings (slot sizes given; 0: no ring), the stream buffers and
/// opens the descriptors. Returns 0 or an errno.
static int set_up(struct vqb_setup *setup, vqb_transport transport, unsigned slots, size_t forward_slot,
                  size_t backward_slot, size_t buffer_bytes) {
    memset(setup, 0, sizeof *setup);
    setup->transport = transport;
    setup->to_child[0] = setup->to_child[1] = setup->to_parent[0] = setup->to_parent[1] = -1;
    // A peer that went away must show up as an error, not kill the benchmark.
    signal(SIGPIPE, SIG_IGN);
    setup->control_bytes = sizeof(struct vqb_control);
    if (!(setup->control = map_shared(setup->control_bytes))) return errno;
    switch (transport) {
    case VQB_VIRTQUEUE:
        setup->queue_layout = vqb_vq_layout_make(slots, (size_t)slots * vqb_round_slot(forward_slot));
        if (!(setup->queue = map_shared(setup->queue_layout.bytes))) return errno;
        // fall through: the same eventfds as the ring
    case VQB_RING:
        if (transport == VQB_RING) {
            setup->forward_bytes = vqb_ring_bytes(slots, vqb_round_slot(forward_slot));
            if (!(setup->forward = map_shared(setup->forward_bytes))) return errno;
            if (backward_slot > 0) {
                setup->backward_bytes = vqb_ring_bytes(slots, vqb_round_slot(backward_slot));
                if (!(setup->backward = map_shared(setup->backward_bytes))) return errno;
            }
        }
        // Eventfds carry the wake-ups; the children inherit them across fork().
        if ((setup->to_child[0] = eventfd(0, EFD_CLOEXEC)) < 0) return errno;
        if ((setup->to_parent[0] = eventfd(0, EFD_CLOEXEC)) < 0) return errno;
        setup->to_child[1] = dup(setup->to_child[0]);
        setup->to_parent[1] = dup(setup->to_parent[0]);
        if (setup->to_child[1] < 0 || setup->to_parent[1] < 0) return errno;
        return 0;
    case VQB_PIPE:
        if (pipe2(setup->to_child, O_CLOEXEC) != 0) return errno;
        if (pipe2(setup->to_parent, O_CLOEXEC) != 0) return errno;
        break;
    case VQB_SOCKETPAIR: {
        int pair[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return errno;
        // One bidirectional connection: the parent uses pair[0], the child pair[1].
        setup->to_child[1] = pair[0];
        setup->to_parent[0] = dup(pair[0]);
        setup->to_child[0] = pair[1];
        setup->to_parent[1] = dup(pair[1]);
        if (setup->to_parent[0] < 0 || setup->to_parent[1] < 0) return errno;
        break;
    }
    default:
        return EINVAL;
    }
    setup->buffer_bytes = buffer_bytes;
    if (!(setup->parent_buffer = map_private(buffer_bytes))) return errno;
    if (!(setup->child_buffer = map_private(buffer_bytes))) return errno;
    return 0;
}

static struct vqb_ring_end ring_end(struct vqb_ring_shared *shared, unsigned slots, size_t slot, int kick_fd,
                                    int wait_fd, int spins) {
    struct vqb_ring_end end = {
        .shared = shared, .mask = slots - 1, .size = slots, .slot_size = vqb_round_slot(slot),
        .kick_fd = kick_fd, .wait_fd = wait_fd, .spins = spins,
    };
    return end;
}

/// Runs `child` in a forked process pinned to `cpu`, waits until it is ready, and returns its pid
/// (or -errno).
static pid_t start_child(struct vqb_setup *setup, int cpu, void (*child)(struct vqb_setup *, void *),
                         void *context) {
    pid_t pid = fork();
    if (pid < 0) return -errno;
    if (pid == 0) {
        int error = vqb_pin_to_cpu(cpu);
        if (error != 0) {
            setup->control->error = error;
            atomic_store(&setup->control->child_ready, 1);
            _exit(1);
        }
        child(setup, context);
        _exit(0);
    }
    // The child's ends stay only in the child, so its death reads as end-of-file here.
    close_fd(&setup->to_child[0]);
    close_fd(&setup->to_parent[1]);
    while (!atomic_load_explicit(&setup->control->child_ready, memory_order_acquire)) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) return -ECHILD;
        sched_yield();
    }
    return pid;
}

/// The child's side of the barrier: ready, then spin until the parent says go.
static void child_ready_and_wait(struct vqb_setup *setup) {
    atomic_store_explicit(&setup->control->child_ready, 1, memory_order_release);
    while (!atomic_load_explicit(&setup->control->go, memory_order_acquire)) vqb_cpu_relax();
}

static int finish_child(pid_t pid, struct vqb_control *control) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return errno;
    }
    if (control->error != 0) return control->error;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return ECHILD;
    return 0;
}

// MARK: Timing groups

uint64_t vqb_median(uint64_t *values, size_t count) {
    if (count == 0) return 0;
    // Quickselect (no allocation; the forked child may not allocate, and this runs beside it).
    size_t low = 0, high = count - 1, middle = count / 2;
    while (low < high) {
        uint64_t pivot = values[(low + high) / 2];
        size_t i = low, j = high;
        while (i <= j) {
            while (values[i] < pivot) i++;
            while (values[j] > pivot) j--;
            if (i <= j) {
                uint64_t swap = values[i];
                values[i] = values[j];
                values[j] = swap;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (middle <= j) high = j;
        else if (middle >= i) low = i;
        else break;
    }
    return values[middle];
}

/// Per-group times of a round-trip run, in memory mapped before the clock starts.
struct group_times {
    uint64_t size;
    uint64_t *values;
    size_t capacity;
    size_t count;
    size_t bytes;
    uint64_t last;
};

static void groups_open(struct group_times *groups, uint64_t operations, uint64_t size) {
    groups->size = size;
    groups->capacity = (size_t)(operations / size) + 1;
    groups->bytes = groups->capacity * sizeof(uint64_t);
    groups->values = map_private(groups->bytes);
    if (groups->values) prefault(groups->values, groups->bytes);
    groups->count = 0;
}

/// Called after operation `index` (0-based): closes a group every `size` operations.
static inline void groups_tick(struct group_times *groups, uint64_t index) {
    if ((index + 1) % groups->size != 0 || !groups->values) return;
    uint64_t now = vqb_now_ns();
    if (groups->count < groups->capacity) groups->values[groups->count++] = now - groups->last;
    groups->last = now;
}

/// Fills the result's group fields and unmaps the times.
static void groups_close(struct group_times *groups, vqb_result *result) {
    result->group_size = groups->size;
    result->groups = groups->count;
    result->median_group_nanoseconds = 0;
    if (groups->values && groups->count > 0) {
        result->median_group_nanoseconds = vqb_median(groups->values, groups->count) * groups->count;
    }
    if (groups->values) munmap(groups->values, groups->bytes);
}

// MARK: C virtqueue

/// One side's view of the C virtqueue's region, and its private state.
struct vq_end {
    struct vqb_descriptor *descriptors;
    _Atomic uint16_t *available_index;
    uint16_t *available_ring;
    _Atomic uint16_t *used_index;
    struct vqb_used_element *used_ring;
    unsigned char *region;
    uint64_t data_start;
    uint64_t data_end;
    size_t buffer_size;
    uint16_t size;
    uint16_t mask;
    /// The driver's next avail.idx and last seen used.idx; the device's the opposite.
    uint16_t own;
    uint16_t seen;
    /// Waking the peer, and sleeping: as the ring does (see `vqb_wait_change`).
    struct vqb_ring_end wake;
    _Atomic uint32_t *own_sleeping;
    _Atomic uint32_t *peer_sleeping;
};

static struct vq_end vq_end_make(struct vqb_setup *setup, unsigned slots, size_t message_size, int kick_fd,
                                 int wait_fd, int spins, int driver) {
    struct vqb_vq_layout layout = setup->queue_layout;
    struct vq_end end = {
        .descriptors = (struct vqb_descriptor *)setup->queue,
        .available_index = (_Atomic uint16_t *)(setup->queue + layout.available + 2),
        .available_ring = (uint16_t *)(setup->queue + layout.available + 4),
        .used_index = (_Atomic uint16_t *)(setup->queue + layout.used + 2),
        .used_ring = (struct vqb_used_element *)(setup->queue + layout.used + 4),
        .region = setup->queue,
        .data_start = layout.data,
        .data_end = layout.bytes,
        .buffer_size = vqb_round_slot(message_size),
        .size = (uint16_t)slots,
        .mask = (uint16_t)(slots - 1),
        .wake = ring_end(NULL, slots, message_size, kick_fd, wait_fd, spins),
        .own_sleeping = driver ? &setup->control->driver_sleeping : &setup->control->device_sleeping,
        .peer_sleeping = driver ? &setup->control->device_sleeping : &setup->control->driver_sleeping,
    };
    return end;
}

struct vq_index16 {
    _Atomic uint16_t *index;
    uint16_t seen;
};

static int vq_index16_changed(const void *context) {
    const struct vq_index16 *index = context;
    return atomic_load_explicit(index->index, memory_order_acquire) != index->seen;
}

/// Blocks until the 16-bit ring index `*index` differs from `seen` (`vqb_wait_until`, as the
/// ring waits) and returns the new value.
static uint16_t vq_wait(struct vq_end *end, _Atomic uint16_t *index, uint16_t seen) {
    struct vq_index16 context = {index, seen};
    vqb_wait_until(&end->wake, end->own_sleeping, vq_index16_changed, &context);
    return atomic_load_explicit(index, memory_order_acquire);
}

/// Driver: takes back every chain the device has returned, with the C virtqueue's checks.
/// Returns 0, or EPROTO for a used id out of range.
static int vq_reclaim(struct vq_end *end, uint16_t *next_free, uint16_t *free_head, unsigned *free_count) {
    uint16_t used = atomic_load_explicit(end->used_index, memory_order_acquire);
    if ((uint16_t)(used - end->seen) > end->size) return EPROTO;
    for (; end->seen != used; end->seen++) {
        struct vqb_used_element element = end->used_ring[end->seen & end->mask];
        if (element.id >= end->size) return EPROTO;
        next_free[element.id] = *free_head;
        *free_head = (uint16_t)element.id;
        (*free_count)++;
    }
    return 0;
}

/// One segment of a chain the full-checks device has taken, in its private memory.
struct vq_private_segment {
    unsigned char *bytes;
    uint32_t length;
    uint32_t writable;
};

/// What the full-checks device keeps privately: which heads it is serving, and the segments of
/// the chain in hand (at most N).
struct vq_device_records {
    uint8_t *in_flight;
    struct vq_private_segment *segments;
};

/// Device: serves `messages` one-descriptor chains, completing each run of them at once. For such
/// chains its checks are the Swift core's device-side ones (avail.idx at most N ahead, head below
/// N, the buffer inside the data area, no chained or indirect descriptor) but one: it keeps no
/// record of the heads it serves, since it completes each chain before it takes the next. It
/// reads each descriptor once.
static int vq_serve(struct vq_end *end, uint64_t messages, uint64_t *checksum, uint64_t *corrupt) {
    for (uint64_t taken = 0; taken < messages;) {
        uint16_t available = atomic_load_explicit(end->available_index, memory_order_acquire);
        if (available == end->seen) available = vq_wait(end, end->available_index, end->seen);
        if ((uint16_t)(available - end->seen) > end->size) return EPROTO;
        for (; end->seen != available; end->seen++, taken++) {
            uint16_t head = end->available_ring[end->seen & end->mask];
            if (head >= end->size) return EPROTO;
            struct vqb_descriptor descriptor = end->descriptors[head];
            if (descriptor.addr < end->data_start || descriptor.len > end->data_end ||
                descriptor.addr > end->data_end - descriptor.len || (descriptor.flags & (1 | 4)) != 0 ||
                descriptor.len < 16)
                return EPROTO;
            *checksum += vqb_touch_message(end->region + descriptor.addr, descriptor.len, corrupt);
            end->used_ring[end->own & end->mask] = (struct vqb_used_element){head, 0};
            end->own++;
        }
        atomic_store_explicit(end->used_index, end->own, memory_order_release);
        vqb_kick_if_sleeping(&end->wake, end->peer_sleeping);
    }
    return 0;
}

/// Device, VQB_CHECKS_FULL: `vq_serve` with the Swift core's device-side validation, as
/// `local_virtqueue.c`'s full chain cycle does it: a head it is not already serving (recorded
/// while it serves it), the chain walked (at most N descriptors, next below N), each buffer
/// inside the data area, no indirect descriptor, readable before writable, the whole chain kept
/// in its private segment list before any of it is used, and its completion no larger than the
/// chain's writable bytes.
static __attribute__((noinline)) int vq_serve_full(struct vq_end *end, uint64_t messages, uint64_t *checksum,
                                                   uint64_t *corrupt, const struct vq_device_records *records) {
    // The geometry is fixed at set-up: kept in locals (registers), as a careful C device keeps it,
    // since the stores into the private records could otherwise alias `end`.
    const struct vqb_descriptor *const descriptors = end->descriptors;
    const uint16_t *const available_ring = end->available_ring;
    struct vqb_used_element *const used_ring = end->used_ring;
    unsigned char *const region = end->region;
    const uint64_t data_start = end->data_start, data_end = end->data_end;
    const uint16_t size = end->size, mask = end->mask;
    uint8_t *const in_flight = records->in_flight;
    struct vq_private_segment *const private_segments = records->segments;
    uint16_t seen = end->seen, own = end->own;
    uint64_t sum = 0, damaged = 0;
    for (uint64_t taken = 0; taken < messages;) {
        uint16_t available = atomic_load_explicit(end->available_index, memory_order_acquire);
        if (available == seen) available = vq_wait(end, end->available_index, seen);
        if ((uint16_t)(available - seen) > size) return EPROTO;
        for (; seen != available; seen++, taken++) {
            uint16_t head = available_ring[seen & mask];
            if (head >= size || in_flight[head]) return EPROTO;
            in_flight[head] = 1;
            unsigned segments = 0;
            uint32_t after_writable = 0, written = 0;
            uint64_t capacity = 0;
            for (uint16_t at = head;;) {
                if (segments == size) return EPROTO;
                struct vqb_descriptor descriptor = descriptors[at];
                if (descriptor.addr < data_start || descriptor.len > data_end ||
                    descriptor.addr > data_end - descriptor.len)
                    return EPROTO;
                uint32_t is_writable = descriptor.flags & 2;
                if ((descriptor.flags & 4) != 0 || (after_writable && !is_writable)) return EPROTO;
                after_writable |= is_writable;
                if (is_writable) capacity += descriptor.len;
                private_segments[segments++] =
                    (struct vq_private_segment){region + descriptor.addr, descriptor.len, is_writable};
                if ((descriptor.flags & 1) == 0) break;
                if (descriptor.next >= size) return EPROTO;
                at = descriptor.next;
            }
            for (unsigned s = 0; s < segments; s++) {
                struct vq_private_segment segment = private_segments[s];
                if (segment.writable) continue;
                if (segment.length < 16) return EPROTO;
                sum += vqb_touch_message(segment.bytes, segment.length, &damaged);
            }
            if (written > capacity) return EPROTO;
            in_flight[head] = 0;
            used_ring[own & mask] = (struct vqb_used_element){head, written};
            own++;
        }
        end->seen = seen;
        end->own = own;
        atomic_store_explicit(end->used_index, own, memory_order_release);
        vqb_kick_if_sleeping(&end->wake, end->peer_sleeping);
    }
    *checksum += sum;
    *corrupt += damaged;
    return 0;
}

/// Driver: streams `messages` one-descriptor chains of `message_size` bytes, publishing avail.idx
/// once per `batch` and reclaiming used chains before each batch. `next_free` has room for the
/// queue's size; descriptor i owns buffer i of the data area, as in local_virtqueue.c.
static int vq_drive(struct vq_end *end, uint16_t *next_free, size_t message_size, size_t batch, uint64_t messages,
                    struct group_times *groups) {
    uint16_t free_head = 0;
    unsigned free_count = end->size;
    for (unsigned i = 0; i < end->size; i++) next_free[i] = (uint16_t)(i + 1);
    int error = 0;
    for (uint64_t sent = 0; sent < messages && error == 0;) {
        error = vq_reclaim(end, next_free, &free_head, &free_count);
        while (error == 0 && free_count < batch) {
            vq_wait(end, end->used_index, end->seen);
            error = vq_reclaim(end, next_free, &free_head, &free_count);
        }
        for (size_t i = 0; i < batch && error == 0; i++, sent++) {
            uint16_t head = free_head;
            free_head = next_free[head];
            free_count--;
            uint64_t address = end->data_start + (uint64_t)head * end->buffer_size;
            vqb_write_message(end->region + address, message_size, sent, 1);
            end->descriptors[head] = (struct vqb_descriptor){address, (uint32_t)message_size, 0, 0};
            end->available_ring[end->own & end->mask] = head;
            end->own++;
        }
        atomic_store_explicit(end->available_index, end->own, memory_order_release);
        vqb_kick_if_sleeping(&end->wake, end->peer_sleeping);
        groups_tick(groups, sent - 1);
    }
    return error;
}

// MARK: Throughput

struct throughput_parameters {
    size_t size;
    size_t batch;
    uint64_t messages;
    unsigned slots;
    int spins;
    /// `vqb_checks`, for the C virtqueue's device.
    int checks;
};

static void throughput_child(struct vqb_setup *setup, void *context) {
    const struct throughput_parameters *p = context;
    struct vqb_control *control = setup->control;
    uint64_t checksum = 0, corrupt = 0, kicks = 0;
    if (setup->transport == VQB_VIRTQUEUE) {
        prefault(setup->queue, setup->queue_layout.bytes);
        struct vq_end end = vq_end_make(setup, p->slots, p->size, setup->to_parent[1], setup->to_child[0], p->spins, 0);
        struct vq_device_records records = {NULL, NULL};
        if (p->checks == VQB_CHECKS_FULL) {
            records.in_flight = map_private(p->slots);
            records.segments = map_private(p->slots * sizeof *records.segments);
            if (records.in_flight == NULL || records.segments == NULL) {
                control->error = ENOMEM;
                atomic_store(&control->child_ready, 1);
                return;
            }
        }
        child_ready_and_wait(setup);
        int error = p->checks == VQB_CHECKS_FULL ? vq_serve_full(&end, p->messages, &checksum, &corrupt, &records)
                                                 : vq_serve(&end, p->messages, &checksum, &corrupt);
        if (error != 0) {
            control->error = error;
            return;
        }
        kicks = end.wake.kicks;
    } else if (setup->transport == VQB_RING) {
        prefault(setup->forward, setup->forward_bytes);
        struct vqb_ring_end end = ring_end(setup->forward, p->slots, p->size, setup->to_parent[1],
                                           setup->to_child[0], p->spins);
        child_ready_and_wait(setup);
        for (uint64_t taken = 0; taken < p->messages;) {
            // Take every message published so far, then release their slots at once.
            const unsigned char *message = vqb_consumer_wait(&end);
            do {
                checksum += vqb_touch_message(message, p->size, &corrupt);
                vqb_consumer_advance(&end);
                taken++;
            } while (taken < p->messages && (message = vqb_consumer_peek(&end)) != NULL);
            vqb_consumer_release(&end);
        }
        kicks = end.kicks;
    } else {
        prefault(setup->child_buffer, setup->buffer_bytes);
        child_ready_and_wait(setup);
        size_t batch_bytes = p->batch * p->size;
        for (uint64_t taken = 0; taken < p->messages; taken += p->batch) {
            int error = read_all(setup->to_child[0], setup->child_buffer, batch_bytes);
            if (error != 0) {
                control->error = error;
                return;
            }
            for (size_t i = 0; i < p->batch; i++) {
                checksum += vqb_touch_message(setup->child_buffer + i * p->size, p->size, &corrupt);
            }
        }
    }
    control->end_ns = vqb_now_ns();
    control->checksum = checksum;
    control->corrupt = corrupt;
    control->kicks = kicks;
}

vqb_result vqb_throughput(vqb_transport transport, size_t message_size, size_t batch, uint64_t messages,
                          unsigned ring_slots, int spins, int producer_cpu, int consumer_cpu) {
    vqb_result result = {0};
    if (message_size < 16 || batch == 0 || ring_slots == 0 || (ring_slots & (ring_slots - 1)) != 0 ||
        batch > ring_slots) {
        result.error = EINVAL;
        return result;
    }
    messages -= messages % batch;
    struct throughput_parameters p = {message_size, batch, messages, ring_slots, spins};
    struct vqb_setup setup;
    int error = set_up(&setup, transport, ring_slots, message_size, 0, batch * message_size);
    if (error != 0) {
        teardown(&setup);
        result.error = error;
        return result;
    }
    // The C virtqueue driver's private free list, mapped (not malloc'ed: this process counts mallocs).
    size_t free_list_bytes = (size_t)ring_slots * sizeof(uint16_t);
    uint16_t *free_list = transport == VQB_VIRTQUEUE ? map_private(free_list_bytes) : NULL;
    if (transport == VQB_VIRTQUEUE && free_list == NULL) {
        teardown(&setup);
        result.error = ENOMEM;
        return result;
    }
    pid_t pid = start_child(&setup, consumer_cpu, throughput_child, &p);
    if (pid < 0 && free_list) munmap(free_list, free_list_bytes);
    if (pid < 0) {
        teardown(&setup);
        result.error = (int)-pid;
        return result;
    }
    error = vqb_pin_to_cpu(producer_cpu);
    uint64_t kicks = 0;
    // Groups of about a 32nd of the run, whole batches, timed as the producer publishes them.
    uint64_t group = messages / 32 / batch * batch;
    struct group_times groups;
    groups_open(&groups, messages, group > batch ? group : batch);
    uint64_t start = groups.last = vqb_now_ns();
    atomic_store_explicit(&setup.control->go, 1, memory_order_release);
    if (error == 0 && transport == VQB_VIRTQUEUE) {
        struct vq_end end = vq_end_make(&setup, ring_slots, message_size, setup.to_child[1], setup.to_parent[0],
                                        spins, 1);
        error = vq_drive(&end, free_list, message_size, batch, messages, &groups);
        kicks = end.wake.kicks;
    } else if (error == 0 && transport == VQB_RING) {
        struct vqb_ring_end end = ring_end(setup.forward, ring_slots, message_size, setup.to_child[1],
                                           setup.to_parent[0], spins);
        for (uint64_t sent = 0; sent < messages;) {
            for (size_t i = 0; i < batch; i++, sent++) {
                vqb_write_message(vqb_producer_reserve(&end), message_size, sent, 1);
                vqb_producer_advance(&end);
            }
            vqb_producer_publish(&end);
            groups_tick(&groups, sent - 1);
        }
        kicks = end.kicks;
    } else if (error == 0) {
        prefault(setup.parent_buffer, setup.buffer_bytes);
        for (uint64_t sent = 0; sent < messages && error == 0;) {
            for (size_t i = 0; i < batch; i++, sent++) {
                vqb_write_message(setup.parent_buffer + i * message_size, message_size, sent, 1);
            }
            error = write_all(setup.to_child[1], setup.parent_buffer, batch * message_size);
            kicks++;
            groups_tick(&groups, sent - 1);
        }
    }
    if (error != 0) kill(pid, SIGKILL);
    int child_error = finish_child(pid, setup.control);
    result.error = error != 0 ? error : child_error;
    result.operations = messages;
    result.nanoseconds = setup.control->end_ns > start ? setup.control->end_ns - start : 0;
    result.kicks = kicks + setup.control->kicks;
    result.checksum = setup.control->checksum;
    result.corrupt = setup.control->corrupt;
    groups_close(&groups, &result);
    if (free_list) munmap(free_list, free_list_bytes);
    teardown(&setup);
    return result;
}

// MARK: Round trip


struct round_trip_parameters {
    size_t size;
    uint64_t round_trips;
    int spins;
};

enum { completion_bytes = 16, round_trip_slots = 8 };

static void round_trip_child(struct vqb_setup *setup, void *context) {
    const struct round_trip_parameters *p = context;
    struct vqb_control *control = setup->control;
    uint64_t checksum = 0, corrupt = 0, kicks = 0;
    if (setup->transport == VQB_RING) {
        prefault(setup->forward, setup->forward_bytes);
        prefault(setup->backward, setup->backward_bytes);
        struct vqb_ring_end requests = ring_end(setup->forward, round_trip_slots, p->size, setup->to_parent[1],
                                                setup->to_child[0], p->spins);
        struct vqb_ring_end replies = ring_end(setup->backward, round_trip_slots, completion_bytes,
                                               setup->to_parent[1], setup->to_child[0], p->spins);
        child_ready_and_wait(setup);
        for (uint64_t i = 0; i < p->round_trips; i++) {
            uint64_t sequence = vqb_touch_message(vqb_consumer_wait(&requests), p->size, &corrupt);
            vqb_consumer_advance(&requests);
            vqb_consumer_release(&requests);
            unsigned char *reply = vqb_producer_reserve(&replies);
            memcpy(reply + 8, &p->size, sizeof p->size);
            memcpy(reply, &sequence, sizeof sequence);
            vqb_producer_advance(&replies);
            vqb_producer_publish(&replies);
            checksum += sequence;
        }
        kicks = requests.kicks + replies.kicks;
    } else {
        prefault(setup->child_buffer, setup->buffer_bytes);
        child_ready_and_wait(setup);
        unsigned char reply[completion_bytes];
        for (uint64_t i = 0; i < p->round_trips; i++) {
            int error = read_all(setup->to_child[0], setup->child_buffer, p->size);
            if (error == 0) {
                uint64_t sequence = vqb_touch_message(setup->child_buffer, p->size, &corrupt);
                memcpy(reply, &sequence, sizeof sequence);
                memcpy(reply + 8, &p->size, sizeof p->size);
                checksum += sequence;
                error = write_all(setup->to_parent[1], reply, sizeof reply);
                kicks++;
            }
            if (error != 0) {
                control->error = error;
                return;
            }
        }
    }
    control->checksum = checksum;
    control->corrupt = corrupt;
    control->kicks = kicks;
}

vqb_result vqb_round_trip(vqb_transport transport, size_t message_size, uint64_t round_trips, vqb_fill fill,
                          int spins, int requester_cpu, int responder_cpu) {
    vqb_result result = {0};
    if (message_size < 16 || transport == VQB_VIRTQUEUE) {
        result.error = EINVAL;
        return result;
    }
    struct round_trip_parameters p = {message_size, round_trips, spins};
    struct vqb_setup setup;
    int error = set_up(&setup, transport, round_trip_slots, message_size, completion_bytes, message_size);
    if (error != 0) {
        teardown(&setup);
        result.error = error;
        return result;
    }
    pid_t pid = start_child(&setup, responder_cpu, round_trip_child, &p);
    if (pid < 0) {
        teardown(&setup);
        result.error = (int)-pid;
        return result;
    }
    error = vqb_pin_to_cpu(requester_cpu);
    uint64_t kicks = 0, corrupt = 0, start = 0, end_ns = 0;
    struct group_times groups;
    groups_open(&groups, round_trips, VQB_GROUP);
    if (error == 0 && transport == VQB_RING) {
        struct vqb_ring_end requests = ring_end(setup.forward, round_trip_slots, message_size, setup.to_child[1],
                                                setup.to_parent[0], spins);
        struct vqb_ring_end replies = ring_end(setup.backward, round_trip_slots, completion_bytes,
                                               setup.to_child[1], setup.to_parent[0], spins);
        // The payload is in place before the clock starts; each request then writes `fill`.
        for (unsigned slot = 0; slot < round_trip_slots; slot++) {
            vqb_write_message(setup.forward->slots + slot * requests.slot_size, message_size, 0, 1);
        }
        start = groups.last = vqb_now_ns();
        atomic_store_explicit(&setup.control->go, 1, memory_order_release);
        for (uint64_t i = 0; i < round_trips; i++) {
            vqb_write_message(vqb_producer_reserve(&requests), message_size, i, fill == VQB_FILL_ALL);
            vqb_producer_advance(&requests);
            vqb_producer_publish(&requests);
            const unsigned char *reply = vqb_consumer_wait(&replies);
            uint64_t sequence;
            memcpy(&sequence, reply, sizeof sequence);
            if (sequence != i) corrupt++;
            vqb_consumer_advance(&replies);
            vqb_consumer_release(&replies);
            groups_tick(&groups, i);
        }
        end_ns = vqb_now_ns();
        kicks = requests.kicks + replies.kicks;
    } else if (error == 0) {
        prefault(setup.parent_buffer, setup.buffer_bytes);
        vqb_write_message(setup.parent_buffer, message_size, 0, 1);
        unsigned char reply[completion_bytes];
        start = groups.last = vqb_now_ns();
        atomic_store_explicit(&setup.control->go, 1, memory_order_release);
        for (uint64_t i = 0; i < round_trips && error == 0; i++) {
            vqb_write_message(setup.parent_buffer, message_size, i, fill == VQB_FILL_ALL);
            error = write_all(setup.to_child[1], setup.parent_buffer, message_size);
            kicks++;
            if (error == 0) error = read_all(setup.to_parent[0], reply, sizeof reply);
            uint64_t sequence;
            memcpy(&sequence, reply, sizeof sequence);
            if (error == 0 && sequence != i) corrupt++;
            groups_tick(&groups, i);
        }
        end_ns = vqb_now_ns();
    }
    if (error != 0) kill(pid, SIGKILL);
    int child_error = finish_child(pid, setup.control);
    result.error = error != 0 ? error : child_error;
    result.operations = round_trips;
    result.nanoseconds = end_ns - start;
    groups_close(&groups, &result);
    result.kicks = kicks + setup.control->kicks;
    result.checksum = setup.control->checksum;
    result.corrupt = corrupt + setup.control->corrupt;
    teardown(&setup);
    return result;
}

// MARK: The C virtqueue device in a process of its own

/// The descriptors a spawned device finds: the memory (control block, then the queue's region)
/// and its two eventfds.
enum { spawned_memory_fd = 100, spawned_kick_fd = 101, spawned_wait_fd = 102 };

static size_t spawned_control_bytes(void) {
    long page = sysconf(_SC_PAGESIZE);
    size_t bytes = sizeof(struct vqb_control);
    return page > 0 ? (bytes + (size_t)page - 1) & ~((size_t)page - 1) : 1 << 16;
}

extern char **environ;

vqb_result vqb_virtqueue_stream_spawned(const char *executable, size_t message_size, size_t batch, uint64_t messages,
                                        unsigned slots, int driver_spins, int device_spins, int device_cpu,
                                        vqb_checks checks) {
    vqb_result result = {0};
    if (message_size < 16 || batch == 0 || slots == 0 || (slots & (slots - 1)) != 0 || batch > slots) {
        result.error = EINVAL;
        return result;
    }
    messages -= messages % batch;
    struct vqb_setup setup;
    memset(&setup, 0, sizeof setup);
    setup.transport = VQB_VIRTQUEUE;
    setup.to_child[0] = setup.to_child[1] = setup.to_parent[0] = setup.to_parent[1] = -1;
    signal(SIGPIPE, SIG_IGN);
    setup.control_bytes = spawned_control_bytes();
    setup.queue_layout = vqb_vq_layout_make(slots, (size_t)slots * vqb_round_slot(message_size));
    size_t free_list_bytes = (size_t)slots * sizeof(uint16_t);
    uint16_t *free_list = map_private(free_list_bytes);
    int memory = memfd_create("vqb-virtqueue", MFD_CLOEXEC);
    int error = free_list == NULL || memory < 0 ? errno : 0;
    if (error == 0 && ftruncate(memory, (off_t)(setup.control_bytes + setup.queue_layout.bytes)) != 0) error = errno;
    unsigned char *base = MAP_FAILED;
    if (error == 0) {
        size_t bytes = setup.control_bytes + setup.queue_layout.bytes;
        base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memory, 0);
        if (base == MAP_FAILED) error = errno;
    }
    if (error == 0) {
        setup.control = (struct vqb_control *)base;
        setup.queue = base + setup.control_bytes;
        setup.control->spawned.messages = messages;
        setup.control->spawned.size = message_size;
        setup.control->spawned.slots = slots;
        setup.control->spawned.spins = device_spins;
        setup.control->spawned.checks = checks;
        if ((setup.to_child[0] = eventfd(0, EFD_CLOEXEC)) < 0 || (setup.to_parent[0] = eventfd(0, EFD_CLOEXEC)) < 0)
            error = errno;
    }
    if (error == 0) {
        setup.to_child[1] = dup(setup.to_child[0]);
        setup.to_parent[1] = dup(setup.to_parent[0]);
        if (setup.to_child[1] < 0 || setup.to_parent[1] < 0) error = errno;
    }
    pid_t pid = -1;
    if (error == 0) {
        // The child's descriptors at fixed numbers (dup2 clears close-on-exec on the copies).
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, memory, spawned_memory_fd);
        posix_spawn_file_actions_adddup2(&actions, setup.to_parent[1], spawned_kick_fd);
        posix_spawn_file_actions_adddup2(&actions, setup.to_child[0], spawned_wait_fd);
        char *arguments[] = {(char *)executable, "c-device", NULL};
        error = posix_spawn(&pid, executable, &actions, NULL, arguments, environ);
        posix_spawn_file_actions_destroy(&actions);
    }
    if (error == 0 && device_cpu >= 0) error = vqb_pin_process(pid, device_cpu);
    if (error == 0) {
        close_fd(&setup.to_child[0]);
        close_fd(&setup.to_parent[1]);
        while (!atomic_load_explicit(&setup.control->child_ready, memory_order_acquire)) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                error = ECHILD;
                break;
            }
            sched_yield();
        }
    }
    uint64_t start = vqb_now_ns(), kicks = 0;
    struct group_times groups = {.size = batch};
    if (error == 0) {
        atomic_store_explicit(&setup.control->go, 1, memory_order_release);
        struct vq_end end = vq_end_make(&setup, slots, message_size, setup.to_child[1], setup.to_parent[0],
                                        driver_spins, 1);
        error = vq_drive(&end, free_list, message_size, batch, messages, &groups);
        kicks = end.wake.kicks;
    }
    if (pid > 0) {
        if (error != 0) kill(pid, SIGKILL);
        int child_error = finish_child(pid, setup.control);
        if (error == 0) error = child_error;
    }
    result.error = error;
    result.operations = messages;
    if (setup.control != NULL) {
        result.nanoseconds = setup.control->end_ns > start ? setup.control->end_ns - start : 0;
        result.kicks = kicks + setup.control->kicks;
        result.checksum = setup.control->checksum;
        result.corrupt = setup.control->corrupt;
    }
    if (base != MAP_FAILED) munmap(base, setup.control_bytes + setup.queue_layout.bytes);
    setup.control = NULL;
    setup.queue = NULL;
    teardown(&setup);
    if (memory >= 0) close(memory);
    if (free_list) munmap(free_list, free_list_bytes);
    return result;
}

int vqb_virtqueue_device_process(void) {
    struct stat status;
    if (fstat(spawned_memory_fd, &status) != 0) return errno;
    size_t control_bytes = spawned_control_bytes();
    if ((size_t)status.st_size < control_bytes) return EINVAL;
    unsigned char *base = mmap(NULL, (size_t)status.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, spawned_memory_fd, 0);
    if (base == MAP_FAILED) return errno;
    struct vqb_setup setup;
    memset(&setup, 0, sizeof setup);
    setup.transport = VQB_VIRTQUEUE;
    setup.control = (struct vqb_control *)base;
    struct throughput_parameters p = {
        (size_t)setup.control->spawned.size, 1, setup.control->spawned.messages, setup.control->spawned.slots,
        setup.control->spawned.spins, setup.control->spawned.checks,
    };
    setup.queue = base + control_bytes;
    setup.queue_layout = vqb_vq_layout_make(p.slots, (size_t)p.slots * vqb_round_slot(p.size));
    if (p.slots == 0 || (p.slots & (p.slots - 1)) != 0 || p.size < 16 ||
        control_bytes + setup.queue_layout.bytes > (size_t)status.st_size) {
        setup.control->error = EINVAL;
        atomic_store(&setup.control->child_ready, 1);
        return EINVAL;
    }
    setup.to_parent[1] = spawned_kick_fd;
    setup.to_child[0] = spawned_wait_fd;
    throughput_child(&setup, &p);
    return setup.control->error;
}
