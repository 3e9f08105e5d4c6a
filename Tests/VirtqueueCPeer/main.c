// A peer written in C from docs/wire-format.md alone: it connects to a UNIX socket, receives a
// region by the socket handshake (section 9), and serves one queue as the device — for each chain
// it writes the chain's device-readable bytes, reversed, into its device-writable buffers — or,
// with --driver, drives it: it sends chains of one readable and one writable buffer and checks
// that each comes back with the readable bytes echoed.
//
// usage: VirtqueueCPeer SOCKET_PATH [--driver] [--chains COUNT] [--trap fill|shutdown]
//
// --trap makes it a hostile peer (the tests of docs/wire-format.md section 7, "What a peer may
// do"): right after the handshake it does to every descriptor it holds what it can to make the
// other side's notify() or wait() block — `fill`: clears O_NONBLOCK on each, keeps a copy of the
// notify end it handed over and fills that channel until it is full, floods the other side's
// wait end, and tries to pass a descriptor through it; `shutdown`: shuts down both ends it
// holds. Descriptor 3 is then a control socket: the peer sends 'T' once the trap is set and waits
// for 'D', after which it receives its pending notifications and works honestly (or it is
// killed).
//
// Exit status: 0 when the other side hung up (device) or every chain came back right (driver);
// 2 bad usage; 3 handshake or region refused; 4 the other side broke a ring rule; 5 a system
// call failed; 6 a reply was wrong.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef F_GET_SEALS
#define F_GET_SEALS 1034
#endif
#ifndef F_SEAL_SHRINK
#define F_SEAL_SHRINK 0x0002
#endif

// ---- Little-endian access (section "Conventions") ------------------------------------------

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t le32(const uint8_t *p) { return (uint32_t)le16(p) | ((uint32_t)le16(p + 2) << 16); }
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

// Ring indices and flags are 16-bit fields the peer updates concurrently: access them atomically.
// On a little-endian host the in-memory value is the wire value.
static uint16_t load16_acquire(uint8_t *p) { return __atomic_load_n((uint16_t *)p, __ATOMIC_ACQUIRE); }
static uint16_t load16_relaxed(uint8_t *p) { return __atomic_load_n((uint16_t *)p, __ATOMIC_RELAXED); }
static void store16_release(uint8_t *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
static void store16_relaxed(uint8_t *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED); }
static void full_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

#define FEATURE_INDIRECT (1ULL << 28)
#define FEATURE_EVENT_IDX (1ULL << 29)
#define FEATURE_VERSION_1 (1ULL << 32)
#define DESC_NEXT 1
#define DESC_WRITE 2
#define DESC_INDIRECT 4

enum { EXIT_USAGE = 2, EXIT_REFUSED = 3, EXIT_VIOLATION = 4, EXIT_SYSTEM = 5, EXIT_WRONG = 6 };

// Answers the offer; with status 0, the notify end of the channel this peer waits on goes along.
static int send_answer(int sock, uint16_t status, int fd) {
    uint8_t answer[16] = {0};
    put64(answer, 0x4151565446495753ULL);  // "SWIFTVQA"
    put16(answer + 8, 2);
    put16(answer + 10, status);
    struct iovec iov = {.iov_base = answer, .iov_len = sizeof answer};
    union {
        char buffer[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        message.msg_control = control.buffer;
        message.msg_controllen = sizeof control.buffer;
        struct cmsghdr *c = CMSG_FIRSTHDR(&message);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    return sendmsg(sock, &message, MSG_NOSIGNAL) == (ssize_t)sizeof answer ? 0 : -1;
}

// Section 7: an end of a notification channel is a connected AF_UNIX SOCK_SEQPACKET socket.
static int is_notification_socket(int fd) {
    struct stat st;
    int domain = 0, type = 0;
    socklen_t length = sizeof domain;
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0 || domain != AF_UNIX) return 0;
    length = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0 || type != SOCK_SEQPACKET) return 0;
    struct sockaddr_un peer;
    socklen_t peer_length = sizeof peer;
    return getpeername(fd, (struct sockaddr *)&peer, &peer_length) == 0;
}

// ---- The region (sections 1, 2) ------------------------------------------------------------

struct queue {
    uint8_t *base;  // where this process mapped the region
    uint64_t data_start, data_end;
    uint16_t size;
    uint8_t *desc, *avail, *used;
    int event_idx, indirect;
    uint16_t last_avail, next_used;
};

// Validates the header and fills in queue `index`; 0 or the answer status (4 or 5).
static int read_header(uint8_t *base, uint64_t file_size, uint16_t index, uint64_t offered_features,
                       struct queue *q) {
    if (file_size < 64) return 4;
    if (le64(base) != 0x0051565446495753ULL || le16(base + 8) != 2) return 4;
    if (le16(base + 0x30) != 0) return 4;  // ring format: this peer runs the split ring only
    uint16_t count = le16(base + 0x0A);
    uint32_t header = le32(base + 0x0C);
    uint64_t features = le64(base + 0x10);
    uint64_t region = le64(base + 0x18);
    uint64_t data = le64(base + 0x20);
    uint64_t data_size = le64(base + 0x28);
    if (count < 1 || count > 64 || header != 64u + 32u * count || header > file_size) return 4;
    if (features & ~(FEATURE_INDIRECT | FEATURE_EVENT_IDX | FEATURE_VERSION_1)) return 4;
    if (!(features & FEATURE_VERSION_1)) return 4;
    if (region > file_size || region < header) return 4;
    if (data > region || data_size > region - data || data % 16 != 0 || data < header) return 4;
    // Collect every area to check bounds and overlaps.
    uint64_t starts[1 + 3 * 64], ends[1 + 3 * 64];
    int areas = 0;
    starts[areas] = data;
    ends[areas++] = data + data_size;
    for (uint16_t i = 0; i < count; i++) {
        uint8_t *entry = base + 64 + 32 * i;
        uint16_t n = le16(entry);
        if (n == 0 || n > 32768 || (n & (n - 1)) != 0) return 4;
        uint64_t offsets[3] = {le64(entry + 8), le64(entry + 16), le64(entry + 24)};
        uint64_t lengths[3] = {16ULL * n, 6ULL + 2ULL * n, 6ULL + 8ULL * n};
        uint64_t aligns[3] = {16, 2, 4};
        for (int part = 0; part < 3; part++) {
            if (offsets[part] > region || offsets[part] % aligns[part] != 0) return 4;
            if (offsets[part] < header || lengths[part] > region - offsets[part]) return 4;
            starts[areas] = offsets[part];
            ends[areas++] = offsets[part] + lengths[part];
        }
        if (i == index) {
            q->size = n;
            q->desc = base + offsets[0];
            q->avail = base + offsets[1];
            q->used = base + offsets[2];
        }
    }
    for (int a = 0; a < areas; a++)
        for (int b = a + 1; b < areas; b++)
            if (starts[a] < ends[b] && starts[b] < ends[a] && starts[a] != ends[a] && starts[b] != ends[b]) return 4;
    if (index >= count || features != offered_features) return 5;
    q->base = base;
    q->data_start = data;
    q->data_end = data + data_size;
    q->event_idx = (features & FEATURE_EVENT_IDX) != 0;
    q->indirect = (features & FEATURE_INDIRECT) != 0;
    q->last_avail = 0;
    q->next_used = 0;
    return 0;
}

// ---- Chains (sections 3, 4, 10) -------------------------------------------------------------

struct segment {
    uint64_t addr;
    uint32_t len;
    int writable;
};

static int inside_data(const struct queue *q, uint64_t addr, uint64_t len) {
    return addr >= q->data_start && addr <= q->data_end && len <= q->data_end - addr;
}

// Appends one descriptor, read once, to the segment list; 0 or -1 on a violation.
static int take_segment(const struct queue *q, uint64_t addr, uint32_t len, uint16_t flags, struct segment *segs,
                        int *count, int *saw_writable) {
    if (!inside_data(q, addr, len)) return -1;
    int writable = (flags & DESC_WRITE) != 0;
    if (!writable && *saw_writable) return -1;
    if (*count >= q->size) return -1;
    *saw_writable |= writable;
    segs[*count].addr = addr;
    segs[*count].len = len;
    segs[*count].writable = writable;
    (*count)++;
    return 0;
}

// Walks the chain from `head`; returns the segment count or -1 on a violation.
static int parse_chain(const struct queue *q, uint16_t head, struct segment *segs) {
    int count = 0, saw_writable = 0, visited = 0;
    uint16_t index = head;
    for (;;) {
        if (++visited > q->size) return -1;
        uint8_t *d = q->desc + 16 * index;
        uint64_t addr = le64(d);
        uint32_t len = le32(d + 8);
        uint16_t flags = le16(d + 12);
        uint16_t next = le16(d + 14);
        if (flags & DESC_INDIRECT) {
            if (!q->indirect || (flags & DESC_NEXT)) return -1;
            if (len == 0 || len % 16 != 0 || !inside_data(q, addr, len)) return -1;
            uint32_t entries = len / 16;
            uint8_t *table = q->base + addr;
            uint32_t at = 0, seen = 0;
            for (;;) {
                if (++seen > entries) return -1;
                uint8_t *e = table + 16 * at;
                uint64_t eaddr = le64(e);
                uint32_t elen = le32(e + 8);
                uint16_t eflags = le16(e + 12);
                uint16_t enext = le16(e + 14);
                if (eflags & DESC_INDIRECT) return -1;
                if (take_segment(q, eaddr, elen, eflags, segs, &count, &saw_writable) != 0) return -1;
                if (!(eflags & DESC_NEXT)) break;
                if (enext >= entries) return -1;
                at = enext;
            }
            return count;
        }
        if (take_segment(q, addr, len, flags, segs, &count, &saw_writable) != 0) return -1;
        if (!(flags & DESC_NEXT)) return count;
        if (next >= q->size) return -1;
        index = next;
    }
}

// Serves one chain: reversed readable bytes into the writable buffers. Returns bytes written.
static uint32_t serve_chain(const struct queue *q, const struct segment *segs, int count) {
    uint64_t readable = 0, writable = 0;
    for (int i = 0; i < count; i++) {
        if (segs[i].writable) writable += segs[i].len; else readable += segs[i].len;
    }
    uint64_t total = readable < writable ? readable : writable;
    uint8_t *copy = malloc(readable ? readable : 1);
    if (!copy) return 0;
    uint64_t at = 0;
    for (int i = 0; i < count; i++) {
        if (segs[i].writable) continue;
        memcpy(copy + at, q->base + segs[i].addr, segs[i].len);  // copy once, then use the copy
        at += segs[i].len;
    }
    uint64_t written = 0;
    for (int i = 0; i < count && written < total; i++) {
        if (!segs[i].writable) continue;
        uint8_t *out = q->base + segs[i].addr;
        for (uint32_t j = 0; j < segs[i].len && written < total; j++, written++) {
            out[j] = copy[readable - 1 - written];
        }
    }
    free(copy);
    return (uint32_t)written;
}

// ---- Notifications (section 7) --------------------------------------------------------------

static int need_event(uint16_t event, uint16_t new_idx, uint16_t old) {
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

// Sends one notification; a full channel means a wake-up is pending anyway. 0, or -1 when the
// other side's end is gone or the call failed.
static int notify(int fd) {
    uint8_t byte = 1;
    for (;;) {
        if (send(fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) return 0;
        if (errno == EINTR) continue;
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    }
}

// Receives the pending notifications (at most 256). Returns how many, 0 for none, -2 when the
// channel has ended (only meaningful when `hung_up`: a read of 0 bytes is otherwise an empty
// message), -1 on error.
static int drain(int fd, int hung_up) {
    uint8_t byte;
    int received = 0;
    while (received < 256) {
        ssize_t n = recv(fd, &byte, 1, MSG_DONTWAIT);
        if (n > 0) {
            received++;
        } else if (n == 0) {
            return hung_up ? (received > 0 ? received : -2) : received + 1;
        } else if (errno != EINTR) {
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? received : -1;
        }
    }
    return received;
}

// Waits for a notification on `wait_end`; returns 1 when notified, 0 when the other side is gone
// (its end of the channel or the connection hung up), -1 on error.
static int wait_for(int wait_end, int sock) {
    struct pollfd fds[2] = {{.fd = wait_end, .events = POLLIN | POLLRDHUP},
                            {.fd = sock, .events = POLLIN | POLLRDHUP}};
    for (;;) {
        fds[0].revents = fds[1].revents = 0;
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (fds[0].revents) {
            int got = drain(wait_end, (fds[0].revents & (POLLRDHUP | POLLHUP)) != 0);
            if (got > 0) return 1;
            if (got == -2) return 0;
            if (got < 0) return errno == ECONNRESET ? 0 : -1;
        }
        if (fds[1].revents) return 0;
    }
}

// ---- The device (sections 6.2, 7) ----------------------------------------------------------

static int serve(struct queue *q, int kick_wait, int call_notify, int sock) {
    struct segment *segs = calloc(q->size, sizeof *segs);
    if (!segs) return EXIT_SYSTEM;
    uint8_t *avail_idx = q->avail + 2, *used_idx = q->used + 2;
    uint8_t *avail_flags = q->avail, *used_flags = q->used;
    uint8_t *used_event = q->avail + 4 + 2 * q->size, *avail_event = q->used + 4 + 8 * q->size;
    unsigned long served = 0;
    for (;;) {
        uint16_t old_used = q->next_used;
        for (;;) {
            uint16_t idx = load16_acquire(avail_idx);
            if (idx == q->last_avail) break;
            if ((uint16_t)(idx - q->last_avail) > q->size) {
                fprintf(stderr, "VirtqueueCPeer: avail.idx jumped\n");
                return EXIT_VIOLATION;
            }
            uint16_t head = le16(q->avail + 4 + 2 * (q->last_avail & (q->size - 1)));
            if (head >= q->size) return EXIT_VIOLATION;
            int count = parse_chain(q, head, segs);
            if (count < 0) {
                fprintf(stderr, "VirtqueueCPeer: malformed chain at head %u\n", head);
                return EXIT_VIOLATION;
            }
            q->last_avail++;
            uint32_t written = serve_chain(q, segs, count);
            uint8_t *slot = q->used + 4 + 8 * (q->next_used & (q->size - 1));
            put32(slot, head);
            put32(slot + 4, written);
            q->next_used++;
            store16_release(used_idx, q->next_used);
            served++;
        }
        if (q->next_used != old_used) {
            full_fence();
            int wanted = q->event_idx ? need_event(load16_relaxed(used_event), q->next_used, old_used)
                                      : !(load16_relaxed(avail_flags) & 1);
            if (wanted && notify(call_notify) != 0) break;  // the driver's end is gone
        }
        // Going to sleep: ask for a kick, fence, re-check, then wait.
        if (q->event_idx) store16_relaxed(avail_event, q->last_avail);
        else store16_relaxed(used_flags, 0);
        full_fence();
        if (load16_acquire(avail_idx) != q->last_avail) continue;
        int woke = wait_for(kick_wait, sock);
        if (woke < 0) return EXIT_SYSTEM;
        if (woke == 0 && load16_acquire(avail_idx) == q->last_avail) break;
        if (!q->event_idx) store16_relaxed(used_flags, 1);
    }
    fprintf(stderr, "VirtqueueCPeer: driver hung up after %lu chains\n", served);
    free(segs);
    return 0;
}

// ---- The driver (sections 6.1, 6.3, 7, 10) -------------------------------------------------

// Chain `slot` uses descriptors 2·slot (readable) and 2·slot + 1 (writable), and 256-byte
// buffers at the start of the data area: one readable and one writable per slot.
#define DRIVER_BUFFER 256

static void message_for(unsigned long number, uint8_t *bytes, uint32_t *length) {
    *length = 1 + (uint32_t)((number * 37) % (DRIVER_BUFFER - 1));
    for (uint32_t i = 0; i < *length; i++) bytes[i] = (uint8_t)(i * 31 + number);
}

static int drive(struct queue *q, unsigned long chains, int kick_notify, int call_wait, int sock) {
    uint16_t slots = q->size / 2;
    if (slots == 0 || q->data_end - q->data_start < 2ULL * DRIVER_BUFFER * slots) {
        fprintf(stderr, "VirtqueueCPeer: the data area is too small to drive this queue\n");
        return EXIT_REFUSED;
    }
    uint8_t *avail_idx = q->avail + 2, *used_idx = q->used + 2;
    uint8_t *avail_flags = q->avail, *used_flags = q->used;
    uint8_t *used_event = q->avail + 4 + 2 * q->size, *avail_event = q->used + 4 + 8 * q->size;
    unsigned long *number = calloc(slots, sizeof *number);
    uint8_t *in_flight = calloc(slots, 1);
    if (!number || !in_flight) return EXIT_SYSTEM;
    uint16_t next_avail = 0, last_used = 0;
    unsigned long sent = 0, checked = 0;
    store16_relaxed(avail_flags, 1);  // polling: no interrupts while busy
    while (checked < chains) {
        // Make chains available in every free slot, then kick if the device asked for it.
        uint16_t old_avail = next_avail;
        for (uint16_t slot = 0; slot < slots && sent < chains; slot++) {
            if (in_flight[slot]) continue;
            uint64_t readable = q->data_start + 2ULL * DRIVER_BUFFER * slot;
            uint32_t length;
            message_for(sent, q->base + readable, &length);
            uint8_t *d = q->desc + 16 * (2 * slot);
            put64(d, readable);
            put32(d + 8, length);
            put16(d + 12, DESC_NEXT);
            put16(d + 14, (uint16_t)(2 * slot + 1));
            d += 16;
            put64(d, readable + DRIVER_BUFFER);
            put32(d + 8, DRIVER_BUFFER);
            put16(d + 12, DESC_WRITE);
            put16(d + 14, 0);
            put16(q->avail + 4 + 2 * (next_avail & (q->size - 1)), (uint16_t)(2 * slot));
            next_avail++;
            number[slot] = sent++;
            in_flight[slot] = 1;
        }
        if (next_avail != old_avail) {
            store16_release(avail_idx, next_avail);
            full_fence();
            int wanted = q->event_idx ? need_event(load16_relaxed(avail_event), next_avail, old_avail)
                                      : !(load16_relaxed(used_flags) & 1);
            if (wanted && notify(kick_notify) != 0) return EXIT_SYSTEM;
        }
        // Take back what the device returned; sleep when there is nothing.
        uint16_t idx = load16_acquire(used_idx);
        if (idx == last_used) {
            if (q->event_idx) store16_relaxed(used_event, last_used);
            else store16_relaxed(avail_flags, 0);
            full_fence();
            if (load16_acquire(used_idx) == last_used) {
                int woke = wait_for(call_wait, sock);
                if (woke < 0) return EXIT_SYSTEM;
                if (woke == 0 && load16_acquire(used_idx) == last_used) {
                    fprintf(stderr, "VirtqueueCPeer: the device hung up with chains in flight\n");
                    return EXIT_SYSTEM;
                }
            }
            if (!q->event_idx) store16_relaxed(avail_flags, 1);
            continue;
        }
        if ((uint16_t)(idx - last_used) > q->size) return EXIT_VIOLATION;
        while (last_used != idx) {
            uint8_t *element = q->used + 4 + 8 * (last_used & (q->size - 1));
            uint32_t id = le32(element), len = le32(element + 4);
            last_used++;
            if (id >= q->size || id % 2 != 0 || !in_flight[id / 2] || len > DRIVER_BUFFER) return EXIT_VIOLATION;
            uint16_t slot = (uint16_t)(id / 2);
            in_flight[slot] = 0;
            uint8_t expected[DRIVER_BUFFER];
            uint32_t length;
            message_for(number[slot], expected, &length);
            uint8_t *reply = q->base + q->data_start + 2ULL * DRIVER_BUFFER * slot + DRIVER_BUFFER;
            if (len != length || memcmp(reply, expected, length) != 0) {
                fprintf(stderr, "VirtqueueCPeer: chain %lu came back wrong\n", number[slot]);
                return EXIT_WRONG;
            }
            checked++;
        }
    }
    fprintf(stderr, "VirtqueueCPeer: %lu chains came back right\n", checked);
    free(number);
    free(in_flight);
    return 0;
}

// ---- The traps (section 7, "What a peer may do") -------------------------------------------

static void clear_nonblocking(int fd) { (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK); }

// `own_wait` and `handed` are the two ends of the channel this peer waits on (it keeps its copy
// of `handed`, the end the other side notifies through); `other` is the notify end of the other
// side's channel; `region` any descriptor to try to pass.
static void set_trap(const char *trap, int own_wait, int handed, int other, int sock, int region) {
    uint8_t byte = 1;
    if (strcmp(trap, "shutdown") == 0) {
        shutdown(own_wait, SHUT_RDWR);
        shutdown(handed, SHUT_RDWR);
        shutdown(other, SHUT_RDWR);
        return;
    }
    int fds[4] = {own_wait, handed, other, sock};
    for (int i = 0; i < 4; i++) clear_nonblocking(fds[i]);
    int smallest = 0;
    (void)setsockopt(handed, SOL_SOCKET, SO_SNDBUF, &smallest, sizeof smallest);
    // Fill the channel the other side notifies through: its sends now find it full.
    while (send(handed, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) {}
    // Flood the other side's wait end, and try to pass it a descriptor.
    while (send(other, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) {}
    union {
        char buffer[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buffer,
                             .msg_controllen = sizeof control.buffer};
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &region, sizeof region);
    (void)sendmsg(other, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
}

// Tells the test the trap is set, and waits for its go-ahead to work honestly. 0, or -1 if the
// control socket failed.
static int await_go_ahead(void) {
    uint8_t byte = 'T';
    if (send(3, &byte, 1, MSG_NOSIGNAL) != 1) return -1;
    for (;;) {
        ssize_t n = recv(3, &byte, 1, 0);
        if (n == 1 && byte == 'D') return 0;
        if (n < 0 && errno == EINTR) continue;
        return -1;
    }
}

int main(int argc, char **argv) {
    const char *path = NULL, *trap = NULL;
    int driver = 0;
    unsigned long chains = 640;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--driver") == 0) driver = 1;
        else if (strcmp(argv[i], "--trap") == 0 && i + 1 < argc) trap = argv[++i];
        else if (strcmp(argv[i], "--chains") == 0 && i + 1 < argc) chains = strtoul(argv[++i], NULL, 10);
        else if (!path) path = argv[i];
        else path = NULL, i = argc;
    }
    if (!path || (trap && strcmp(trap, "fill") != 0 && strcmp(trap, "shutdown") != 0)) {
        fprintf(stderr, "usage: %s SOCKET_PATH [--driver] [--chains COUNT] [--trap fill|shutdown]\n", argv[0]);
        return EXIT_USAGE;
    }
    // ---- Handshake (section 9) ----
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path) return EXIT_USAGE;
    strcpy(address.sun_path, path);
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0 || connect(sock, (struct sockaddr *)&address, sizeof address) != 0) {
        perror("connect");
        return EXIT_SYSTEM;
    }
    uint8_t offer[128];
    union {
        char buffer[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = offer, .iov_len = sizeof offer};
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buffer,
                             .msg_controllen = sizeof control.buffer};
    ssize_t got = recvmsg(sock, &message, MSG_CMSG_CLOEXEC);
    int fds[8], nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); got >= 0 && c; c = CMSG_NXTHDR(&message, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (nfds < 8) fds[nfds++] = fd; else close(fd);
        }
    }
    int status = 0;
    uint16_t wanted_role = driver ? 2 : 1;
    if (got != 64 || (message.msg_flags & MSG_TRUNC)) status = 1;
    else if (le64(offer) != 0x4F51565446495753ULL || le16(offer + 8) != 2 || le16(offer + 10) != 64) status = 1;
    else if (le16(offer + 12) != 1 && le16(offer + 12) != 2) status = 1;
    else if (le16(offer + 12) != wanted_role) status = 5;  // this peer plays one role only
    else if (le32(offer + 0x20) != 2) status = 2;
    for (int i = 0x24; status == 0 && i < 64; i++) if (offer[i] != 0) status = 1;
    if (status == 0 && (nfds != 2 || (message.msg_flags & MSG_CTRUNC))) status = 2;
    if (status == 0 && !is_notification_socket(fds[1])) status = 2;
    struct stat st;
    int seals = -1;
    if (status == 0) {
        seals = fcntl(fds[0], F_GET_SEALS);
        if (fstat(fds[0], &st) != 0 || !S_ISREG(st.st_mode) || seals < 0 || !(seals & F_SEAL_SHRINK) ||
            (uint64_t)st.st_size != le64(offer + 0x18) || st.st_size < 64)
            status = 3;
    }
    uint8_t *base = MAP_FAILED;
    struct queue q = {0};
    if (status == 0) {
        base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
        if (base == MAP_FAILED) status = 3;
    }
    if (status == 0) status = read_header(base, (uint64_t)st.st_size, le16(offer + 14), le64(offer + 0x10), &q);
    // The channel this peer waits on (kick for a device, call for a driver): made here, its
    // notify end handed over in the answer.
    int own[2] = {-1, -1};
    if (status == 0 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, own) != 0) return EXIT_SYSTEM;
    if (status != 0) {
        send_answer(sock, (uint16_t)status, -1);
        for (int i = 0; i < nfds; i++) close(fds[i]);
        fprintf(stderr, "VirtqueueCPeer: refused the offer with status %d\n", status);
        return EXIT_REFUSED;
    }
    if (send_answer(sock, 0, own[1]) != 0) return EXIT_SYSTEM;
    int own_wait = own[0], other_notify = fds[1];
    if (trap) {
        // Keeps the region's descriptor and its copy of the end it handed over: it shares that
        // socket with the other side.
        set_trap(trap, own_wait, own[1], other_notify, sock, fds[0]);
        if (await_go_ahead() != 0) return EXIT_SYSTEM;
        int pending = drain(own_wait, 0);
        fprintf(stderr, "VirtqueueCPeer: trap lifted, %d notifications were pending\n", pending);
    } else {
        close(own[1]);
        close(fds[0]);  // the mapping stays
    }

    // ---- Serve or drive (sections 6, 7) ----
    if (driver) {
        int result = drive(&q, chains, other_notify, own_wait, sock);
        close(sock);  // hangs up: the device's waits end
        return result;
    }
    return serve(&q, own_wait, other_notify, sock);
}
