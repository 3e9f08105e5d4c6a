// What Swift's Glibc module lacks for the shared-memory backend: memfd and seals, eventfd, pidfd,
// SCM_RIGHTS, posix_spawn with exact file descriptor inheritance, and the wait-status macros.
// Every function returns -1 and sets errno on failure unless it says otherwise.
#ifndef C_VIRTQUEUE_SYSTEM_H
#define C_VIRTQUEUE_SYSTEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
/// the path does not fit sockaddr_un.
int vq_unix_listen(const char *path, int backlog);
/// socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC) bound to `path` and listening (vhost-user's socket).
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

#endif
