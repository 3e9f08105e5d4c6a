#ifndef CVIRTQUEUE_SANDBOX_H
#define CVIRTQUEUE_SANDBOX_H

#include <stdint.h>

/// The exit status a sandboxed child uses after its SIGSYS reporter has recorded a forbidden call.
#define VQ_SANDBOX_VIOLATION_EXIT_STATUS 159

/// The record the SIGSYS reporter writes to the report file descriptor: 16 bytes, host order.
typedef struct {
    uint32_t magic;        ///< VQ_SANDBOX_REPORT_MAGIC
    int32_t syscall;       ///< siginfo.si_syscall: the number of the forbidden call
    uint32_t arch;         ///< siginfo.si_arch: the AUDIT_ARCH_* of the call
    uint32_t reserved;
} vq_sandbox_report;

#define VQ_SANDBOX_REPORT_MAGIC 0x53595343u  /* "CSYS" */

/// Installs a SIGSYS handler that writes a vq_sandbox_report to `report_fd` with the raw write
/// system call, then ends the process with exit_group(VQ_SANDBOX_VIOLATION_EXIT_STATUS).
/// The handler makes no other system call, so a filter need only allow write on report_fd and
/// exit_group. Returns 0, or -1 with errno set.
int vq_sandbox_install_sigsys_reporter(int report_fd);

/// Sets PR_SET_NO_NEW_PRIVS. Returns 0, or -1 with errno set.
int vq_sandbox_set_no_new_privs(void);

/// The prctl option whose first argument the sandbox filter allows, so a confined child can
/// report its own seccomp mode: PR_GET_SECCOMP.
#define VQ_SANDBOX_PR_GET_SECCOMP 21

/// The calling process's seccomp mode as the kernel reports it, prctl(PR_GET_SECCOMP):
/// 0 none, 1 strict, 2 filter. Returns -1 with errno set on failure.
int vq_sandbox_seccomp_mode(void);

/// Closes every file descriptor >= lowest except those listed in keep (close_range where the
/// kernel has it, a /proc/self/fd-free loop otherwise). Returns 0, or -1 with errno set.
int vq_sandbox_close_other_fds(const int *keep, int keep_count);

/// Lowers RLIMIT_NOFILE to `open_files`, and RLIMIT_NPROC and RLIMIT_CORE to 0.
/// Returns 0, or -1 with errno set.
int vq_sandbox_lower_limits(unsigned long open_files);
/// setrlimit: RLIMIT_NOFILE to `open_files` and RLIMIT_CORE to 0, leaving RLIMIT_NPROC (a
/// confined process that serves rings on threads needs it; its filter forbids new processes).
int vq_sandbox_lower_limits_keeping_threads(unsigned long open_files);

/// Attempts the named forbidden operation, for policy tests and the demo's --misbehave path:
/// "openat", "socket", "connect", "execve", "fork", "kill", "ptrace", "mmap-exec",
/// "mprotect-exec", "write-foreign-fd", "getpid", "sigaction-sigsys" and "sigaction-sigusr1" (reading
/// the signal's action, `rt_sigaction` with no new one), and on a device child's notification sockets
/// (descriptors 4, kick, and 5, call) the calls the policy does not allow there: "read-kick"
/// (a read of 0 bytes), "sendto-kick" and "recvfrom-call" (both with MSG_DONTWAIT, so that none
/// of them could block if a policy let it through). Returns only if the call was allowed (its
/// result), or -2 for an unknown name.
long vq_sandbox_attempt(const char *name);

#endif
