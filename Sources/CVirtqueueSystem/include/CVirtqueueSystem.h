// What Swift's Glibc module lacks for the shared-memory backend: memfd and seals, notification
// sockets, eventfd (vhost-user's), pidfd, SCM_RIGHTS, posix_spawn with exact file descriptor
// inheritance, and the wait-status macros.
// Every function returns -1 and sets errno on failure unless it says otherwise.
#ifndef C_VIRTQUEUE_SYSTEM_H
#define C_VIRTQUEUE_SYSTEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <pthread.h>

// memfd_create flags (linux/memfd.h).
#define VQ_MFD_CLOEXEC 0x0001U
#define VQ_MFD_ALLOW_SEALING 0x0002U

// File seals (linux/fcntl.h).
#define VQ_SEAL_SEAL 0x0001
#define VQ_SEAL_SHRINK 0x0002
#define VQ_SEAL_GROW 0x0004
#define VQ_SEAL_WRITE 0x0008
#define VQ_SEAL_FUTURE_WRITE 0x0010

// poll(2) event bit that Glibc's module does not always export.
#define VQ_POLLRDHUP 0x2000

/// memfd_create(2).
int vq_memfd_create(const char *name, unsigned int flags);
/// fcntl(fd, F_ADD_SEALS, seals).
int vq_add_seals(int fd, int seals);
/// fcntl(fd, F_GET_SEALS): the seals, or -1 (EINVAL for a file that cannot be sealed).
int vq_get_seals(int fd);
/// fcntl(fd, F_DUPFD_CLOEXEC, minimum).
int vq_dup_cloexec(int fd, int minimum);
/// Sets or clears FD_CLOEXEC.
int vq_set_cloexec(int fd, int on);
/// Sets O_NONBLOCK on the open file description.
int vq_set_nonblocking(int fd);
/// fstat(2) reduced to what the backend checks: whether `fd` is a regular file, and its size.
int vq_file_info(int fd, int *is_regular, int64_t *size);

// ---- Notification sockets (docs/wire-format.md, section 7) ----
// A notification channel is a socketpair(AF_UNIX, SOCK_SEQPACKET): the side that waits holds one
// end, the side that notifies the other. Every call below passes MSG_DONTWAIT, a per-call flag,
// so none of them can block, whatever O_NONBLOCK says on a file description the peer shares.

/// What vq_notification_drain returns when the channel has ended: the peer closed or shut down
/// its end and nothing is pending.
#define VQ_NOTIFICATION_END (-2)

/// What vq_notification_socket_check finds wrong with a descriptor (0: nothing).
#define VQ_SOCKET_NOT_A_SOCKET 1
#define VQ_SOCKET_NOT_UNIX 2
#define VQ_SOCKET_NOT_SEQPACKET 3
#define VQ_SOCKET_NOT_CONNECTED 4

/// A new notification channel: socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC). `fds[0]` is
/// the wait end, `fds[1]` the notify end. Where the kernel has SO_PASSRIGHTS (Linux 6.16 and
/// later), it is turned off on the wait end, so the peer cannot pass descriptors through it.
int vq_notification_pair(int fds[2]);
/// Sends one notification on a notify end: send(fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL).
/// Returns 0 when sent, 1 when the channel is full (EAGAIN: the peer has notifications it has
/// not received yet, so a wake-up is pending anyway), or -1 with errno (EPIPE, ECONNRESET: the
/// peer's end is gone).
int vq_notification_send(int fd);
/// Receives the pending notifications on a wait end, at most `limit` of them, with
/// recv(fd, …, MSG_DONTWAIT). Returns how many arrived (0: none, a spurious wake-up),
/// VQ_NOTIFICATION_END when the channel has ended with nothing pending, or -1 with errno.
/// `hung_up` says whether poll reported POLLRDHUP or POLLHUP: only then is a read of 0 bytes the
/// end of the channel; otherwise it is an empty message, which counts as a notification.
int vq_notification_drain(int fd, int limit, int hung_up);
/// Checks that `fd` is what a notification channel's end must be: a connected AF_UNIX
/// SOCK_SEQPACKET socket. Returns 0, one of the VQ_SOCKET_* codes, or -1 with errno.
int vq_notification_socket_check(int fd);
/// The identity of the file `fd` refers to (st_dev, st_ino): two descriptors with the same
/// identity name the same socket.
int vq_file_identity(int fd, uint64_t *device, uint64_t *inode);

// ---- Eventfds (vhost-user's kick and call descriptors) ----

/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK).
int vq_eventfd(void);
/// Adds 1 to an eventfd's counter. Returns 0, or -1 with errno (EAGAIN: the counter is full,
/// which means a wake-up is pending anyway).
int vq_eventfd_signal(int fd);
/// Reads and resets an eventfd's counter without blocking, even if the peer cleared O_NONBLOCK
/// on the shared file description. Returns 1 if it was non-zero, 0 if it was zero, -1 on error.
int vq_eventfd_drain(int fd);

/// pidfd_open(2).
int vq_pidfd_open(pid_t pid);
/// pidfd_send_signal(2).
int vq_pidfd_send_signal(int pidfd, int sig);

/// socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC).
int vq_socketpair(int fds[2]);
/// A SOCK_SEQPACKET | SOCK_CLOEXEC UNIX socket bound to `path` and listening. ENAMETOOLONG if
/// the path does not fit sockaddr_un; EADDRINUSE if it exists. `path` appears only once the socket
/// listens (it is bound under a temporary name and renamed), so a peer that connects as soon as
/// it sees the file is never refused.
int vq_unix_listen(const char *path, int backlog);
/// socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC) bound to `path` and listening (vhost-user's socket),
/// as vq_unix_listen does.
int vq_unix_listen_stream(const char *path, int backlog);
/// socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC) connected to `path` (a vhost-user front-end's end).
int vq_unix_connect_stream(const char *path);
/// A SOCK_SEQPACKET | SOCK_CLOEXEC UNIX socket connected to `path`.
int vq_unix_connect(const char *path);
/// accept4(fd, NULL, NULL, SOCK_CLOEXEC).
int vq_accept(int fd);
/// The peer's process id, user id and group id (SO_PEERCRED).
int vq_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

/// Sends one message with `nfds` file descriptors in a single SCM_RIGHTS control message
/// (MSG_NOSIGNAL). Returns the bytes sent or -1.
ssize_t vq_send_with_fds(int sock, const void *bytes, size_t length, const int *fds, int nfds);
/// Receives one message (MSG_CMSG_CLOEXEC). Up to `max_fds` received descriptors are stored in
/// `fds`; any beyond that are closed at once. `*received_fds` is the number the peer sent that
/// reached us (stored plus closed); `*message_flags` the msg_flags (MSG_TRUNC, MSG_CTRUNC).
/// Returns the message's bytes (0 at end of stream) or -1; on -1 no descriptor is kept open.
ssize_t vq_receive_with_fds(
    int sock, void *bytes, size_t capacity, int *fds, int max_fds, int *received_fds, int *message_flags);

/// posix_spawn(3) of `path` whose child inherits exactly `fds[0..<nfds]` as descriptors
/// 3, 4, … 3+nfds-1 (besides 0, 1 and 2); every other descriptor is closed in the child, the
/// signal mask is emptied and every signal's disposition reset. `envp` NULL means `environ`.
/// Returns 0 or an errno value (not -1).
int vq_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], const int *fds, int nfds);

/// The wait-status macros.
int vq_wifexited(int status);
int vq_wexitstatus(int status);
int vq_wifsignaled(int status);
int vq_wtermsig(int status);

// ---- epoll (VirtqueueAsync's event loop) ----
// Glibc's struct epoll_event is packed on x86_64, which Swift does not import reliably: these
// take and return its fields one by one.

/// epoll_create1(EPOLL_CLOEXEC).
int vq_epoll_create(void);
/// epoll_ctl(epfd, EPOLL_CTL_ADD / MOD, fd, {events, data.u64 = data}); `modify` selects MOD.
int vq_epoll_control(int epfd, int fd, uint32_t events, uint64_t data, int modify);
/// epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL).
int vq_epoll_remove(int epfd, int fd);
/// epoll_wait(2) into parallel arrays of at most `capacity` (≤ 64) entries. Returns how many
/// are ready, or -1 with errno (EINTR included: the caller retries).
int vq_epoll_wait(int epfd, uint64_t *data, uint32_t *events, int capacity, int timeout);
/// pthread_setname_np(3): names a thread (at most 15 bytes) in /proc/self/task/*/comm.
int vq_thread_set_name(pthread_t thread, const char *name);

// epoll event bits (sys/epoll.h), for Swift.
#define VQ_EPOLLIN 0x001U
#define VQ_EPOLLERR 0x008U
#define VQ_EPOLLHUP 0x010U
#define VQ_EPOLLRDHUP 0x2000U
#define VQ_EPOLLONESHOT (1U << 30)

#endif
