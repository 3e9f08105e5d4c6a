#define _GNU_SOURCE
#include "CVirtqueueSystem.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int vq_memfd_create(const char *name, unsigned int flags) {
#ifdef SYS_memfd_create
    return (int)syscall(SYS_memfd_create, name, flags);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int vq_add_seals(int fd, int seals) { return fcntl(fd, F_ADD_SEALS, seals); }

int vq_get_seals(int fd) { return fcntl(fd, F_GET_SEALS); }

int vq_dup_cloexec(int fd, int minimum) { return fcntl(fd, F_DUPFD_CLOEXEC, minimum); }

int vq_set_cloexec(int fd, int on) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return -1;
    flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    return fcntl(fd, F_SETFD, flags);
}

int vq_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int vq_file_info(int fd, int *is_regular, int64_t *size) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    *is_regular = S_ISREG(st.st_mode) ? 1 : 0;
    *size = (int64_t)st.st_size;
    return 0;
}

// SO_PASSRIGHTS (Linux 6.16) is 83 wherever the kernel uses asm-generic/socket.h; older kernels
// answer ENOPROTOOPT, which vq_notification_pair ignores.
#if !defined(SO_PASSRIGHTS) && (defined(__x86_64__) || defined(__aarch64__) || defined(__riscv))
#define SO_PASSRIGHTS 83
#endif

int vq_notification_pair(int fds[2]) {
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) return -1;
#ifdef SO_PASSRIGHTS
    int off = 0;
    (void)setsockopt(fds[0], SOL_SOCKET, SO_PASSRIGHTS, &off, sizeof off);
#endif
    return 0;
}

int vq_notification_send(int fd) {
    static const unsigned char one = 1;
    for (;;) {
        ssize_t n = send(fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n == 1) return 0;
        if (n >= 0) {
            errno = EIO;
            return -1;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
        return -1;
    }
}

int vq_notification_drain(int fd, int limit, int hung_up) {
    unsigned char byte;
    int received = 0;
    while (received < limit) {
        ssize_t n = recv(fd, &byte, 1, MSG_DONTWAIT);
        if (n > 0) {
            received++;
            continue;
        }
        if (n == 0) {
            // SOCK_SEQPACKET reads 0 bytes both for an empty message and at the end of the
            // channel; the end is what it means once poll reported the hang-up.
            if (hung_up) return received > 0 ? received : VQ_NOTIFICATION_END;
            return received + 1;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return received;
        return -1;
    }
    return received;
}

int vq_notification_socket_check(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    if (!S_ISSOCK(st.st_mode)) return VQ_SOCKET_NOT_A_SOCKET;
    int value = 0;
    socklen_t length = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &length) != 0) {
        // An O_PATH descriptor of a socket file passes fstat, but is no socket.
        return errno == ENOTSOCK || errno == EBADF ? VQ_SOCKET_NOT_A_SOCKET : -1;
    }
    if (value != AF_UNIX) return VQ_SOCKET_NOT_UNIX;
    length = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &length) != 0) return -1;
    if (value != SOCK_SEQPACKET) return VQ_SOCKET_NOT_SEQPACKET;
    struct sockaddr_un address;
    socklen_t address_length = sizeof address;
    if (getpeername(fd, (struct sockaddr *)&address, &address_length) != 0) {
        return errno == ENOTCONN ? VQ_SOCKET_NOT_CONNECTED : -1;
    }
    return 0;
}

int vq_file_identity(int fd, uint64_t *device, uint64_t *inode) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    *device = (uint64_t)st.st_dev;
    *inode = (uint64_t)st.st_ino;
    return 0;
}

int vq_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int vq_eventfd_signal(int fd) {
    uint64_t one = 1;
    for (;;) {
        ssize_t n = write(fd, &one, sizeof one);
        if (n == (ssize_t)sizeof one) return 0;
        if (n < 0 && errno == EINTR) continue;
        if (n >= 0) errno = EIO;
        return -1;
    }
}

int vq_eventfd_drain(int fd) {
    uint64_t value = 0;
    struct iovec iov = {.iov_base = &value, .iov_len = sizeof value};
    for (;;) {
        // RWF_NOWAIT makes this read non-blocking whatever O_NONBLOCK says: the file description
        // is shared with the peer, which could clear the flag.
        ssize_t n = preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
        if (n < 0 && errno == EOPNOTSUPP) n = read(fd, &value, sizeof value);
        if (n == (ssize_t)sizeof value) return value != 0;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        if (n >= 0) errno = EIO;
        return -1;
    }
}

int vq_pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int vq_pidfd_send_signal(int pidfd, int sig) {
#ifdef SYS_pidfd_send_signal
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int vq_socketpair(int fds[2]) { return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds); }

static int make_address(const char *path, struct sockaddr_un *address) {
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof address->sun_path) {
        errno = length == 0 ? EINVAL : ENAMETOOLONG;
        return -1;
    }
    memcpy(address->sun_path, path, length);
    return 0;
}

/// Binds a new socket of `type` to `path` and listens, so that `path` appears only once the
/// socket accepts connections: it is bound under a temporary name in the same directory, put into
/// listening, and renamed to `path` without replacing anything (EADDRINUSE if `path` exists, as
/// bind reports). A peer that waits for `path` to exist and then connects cannot find a socket
/// that is bound but not yet listening (ECONNREFUSED). Falls back to binding `path` itself when
/// the temporary name would not fit sockaddr_un.
static int unix_listen(const char *path, int backlog, int type) {
    struct sockaddr_un address;
    if (make_address(path, &address) != 0) return -1;
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    char temporary[sizeof address.sun_path];
    int renamed = snprintf(temporary, sizeof temporary, "%s.%d.tmp", path, (int)getpid());
    struct sockaddr_un bound;
    int staged = renamed > 0 && (size_t)renamed < sizeof temporary && make_address(temporary, &bound) == 0;
    if (staged) unlink(temporary);
    if (bind(fd, (struct sockaddr *)(staged ? &bound : &address), sizeof address) != 0 || listen(fd, backlog) != 0) {
        int saved = errno;
        if (staged) unlink(temporary);
        close(fd);
        errno = saved;
        return -1;
    }
    if (staged && renameat2(AT_FDCWD, temporary, AT_FDCWD, path, RENAME_NOREPLACE) != 0) {
        int saved = errno == EEXIST ? EADDRINUSE : errno;
        unlink(temporary);
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static int unix_connect(const char *path, int type) {
    struct sockaddr_un address;
    if (make_address(path, &address) != 0) return -1;
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    for (;;) {
        if (connect(fd, (struct sockaddr *)&address, sizeof address) == 0) return fd;
        if (errno != EINTR) break;
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

int vq_unix_listen(const char *path, int backlog) { return unix_listen(path, backlog, SOCK_SEQPACKET); }

int vq_unix_connect(const char *path) { return unix_connect(path, SOCK_SEQPACKET); }

int vq_unix_listen_stream(const char *path, int backlog) { return unix_listen(path, backlog, SOCK_STREAM); }

int vq_unix_connect_stream(const char *path) { return unix_connect(path, SOCK_STREAM); }

int vq_accept(int fd) {
    for (;;) {
        int client = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (client >= 0 || errno != EINTR) return client;
    }
}

int vq_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
    *pid = credentials.pid;
    *uid = credentials.uid;
    *gid = credentials.gid;
    return 0;
}

#define VQ_MAX_SENT_FDS 16

ssize_t vq_send_with_fds(int sock, const void *bytes, size_t length, const int *fds, int nfds) {
    if (nfds < 0 || nfds > VQ_MAX_SENT_FDS) {
        errno = EINVAL;
        return -1;
    }
    union {
        char buffer[CMSG_SPACE(sizeof(int) * VQ_MAX_SENT_FDS)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = (void *)bytes, .iov_len = length};
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        message.msg_control = control.buffer;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(header), fds, sizeof(int) * (size_t)nfds);
    }
    for (;;) {
        ssize_t n = sendmsg(sock, &message, MSG_NOSIGNAL);
        if (n >= 0 || errno != EINTR) return n;
    }
}

#define VQ_MAX_RECEIVED_FDS 64

ssize_t vq_receive_with_fds(
    int sock, void *bytes, size_t capacity, int *fds, int max_fds, int *received_fds, int *message_flags) {
    union {
        char buffer[CMSG_SPACE(sizeof(int) * VQ_MAX_RECEIVED_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = bytes, .iov_len = capacity};
    struct msghdr message;
    ssize_t n;
    *received_fds = 0;
    *message_flags = 0;
    for (;;) {
        memset(&control, 0, sizeof control);
        memset(&message, 0, sizeof message);
        message.msg_iov = &iov;
        message.msg_iovlen = 1;
        message.msg_control = control.buffer;
        message.msg_controllen = sizeof control.buffer;
        n = recvmsg(sock, &message, MSG_CMSG_CLOEXEC);
        if (n >= 0 || errno != EINTR) break;
    }
    if (n < 0) return -1;
    int kept = 0;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL;
         header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t index = 0; index < count; index++) {
            int fd;
            memcpy(&fd, CMSG_DATA(header) + index * sizeof(int), sizeof fd);
            if (kept < max_fds) {
                fds[kept++] = fd;
            } else {
                close(fd);
            }
            *received_fds += 1;
        }
    }
    *message_flags = message.msg_flags;
    return n;
}

int vq_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], const int *fds, int nfds) {
    if (nfds < 0 || nfds > VQ_MAX_SENT_FDS) return EINVAL;
    int first = 3;
    int temporary[VQ_MAX_SENT_FDS];
    int made = 0;
    int error = 0;
    // Move every source above the target range first, so no dup2 overwrites a later source.
    for (; made < nfds; made++) {
        temporary[made] = fcntl(fds[made], F_DUPFD_CLOEXEC, first + nfds);
        if (temporary[made] < 0) {
            error = errno;
            break;
        }
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int haveActions = 0, haveAttributes = 0;
    if (error == 0) error = posix_spawn_file_actions_init(&actions);
    if (error == 0) haveActions = 1;
    for (int index = 0; error == 0 && index < nfds; index++) {
        error = posix_spawn_file_actions_adddup2(&actions, temporary[index], first + index);
    }
    if (error == 0) error = posix_spawn_file_actions_addclosefrom_np(&actions, first + nfds);
    if (error == 0) error = posix_spawnattr_init(&attributes);
    if (error == 0) haveAttributes = 1;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    if (error == 0) error = posix_spawnattr_setsigmask(&attributes, &none);
    if (error == 0) error = posix_spawnattr_setsigdefault(&attributes, &all);
    if (error == 0) error = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (error == 0) error = posix_spawn(pid, path, &actions, &attributes, argv, envp ? envp : environ);
    if (haveAttributes) posix_spawnattr_destroy(&attributes);
    if (haveActions) posix_spawn_file_actions_destroy(&actions);
    for (int index = 0; index < made; index++) close(temporary[index]);
    return error;
}

int vq_wifexited(int status) { return WIFEXITED(status); }
int vq_wexitstatus(int status) { return WEXITSTATUS(status); }
int vq_wifsignaled(int status) { return WIFSIGNALED(status); }
int vq_wtermsig(int status) { return WTERMSIG(status); }

int vq_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int vq_epoll_control(int epfd, int fd, uint32_t events, uint64_t data, int modify) {
    struct epoll_event event = {.events = events, .data.u64 = data};
    return epoll_ctl(epfd, modify ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &event);
}

int vq_epoll_remove(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int vq_epoll_wait(int epfd, uint64_t *data, uint32_t *events, int capacity, int timeout) {
    struct epoll_event ready[64];
    if (capacity > 64) capacity = 64;
    int count = epoll_wait(epfd, ready, capacity, timeout);
    for (int index = 0; index < count; index++) {
        data[index] = ready[index].data.u64;
        events[index] = ready[index].events;
    }
    return count;
}

int vq_thread_set_name(pthread_t thread, const char *name) { return pthread_setname_np(thread, name); }
