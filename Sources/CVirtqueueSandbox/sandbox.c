#define _GNU_SOURCE
#include "CVirtqueueSandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

_Static_assert(VQ_SANDBOX_PR_GET_SECCOMP == PR_GET_SECCOMP, "PR_GET_SECCOMP");

static int report_fd_for_handler = -1;

static void sigsys_reporter(int signal, siginfo_t *info, void *context) {
    (void)signal;
    (void)context;
    vq_sandbox_report report;
    memset(&report, 0, sizeof report);
    report.magic = VQ_SANDBOX_REPORT_MAGIC;
    report.syscall = info->si_syscall;
    report.arch = info->si_arch;
    if (report_fd_for_handler >= 0) {
        (void)syscall(SYS_write, report_fd_for_handler, &report, sizeof report);
    }
    syscall(SYS_exit_group, VQ_SANDBOX_VIOLATION_EXIT_STATUS);
    for (;;) {}
}

int vq_sandbox_install_sigsys_reporter(int report_fd) {
    report_fd_for_handler = report_fd;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = sigsys_reporter;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSYS, &action, NULL) != 0) return -1;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGSYS);
    return sigprocmask(SIG_UNBLOCK, &set, NULL);
}

int vq_sandbox_set_no_new_privs(void) {
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

int vq_sandbox_seccomp_mode(void) { return prctl(VQ_SANDBOX_PR_GET_SECCOMP, 0, 0, 0, 0); }

int vq_sandbox_close_other_fds(const int *keep, int keep_count) {
    // Close everything from 3 upwards that is not kept. The kept descriptors are few and small,
    // so close the gaps between them with close_range, falling back to a bounded loop.
    int sorted[64];
    if (keep_count < 0 || keep_count > 64) {
        errno = EINVAL;
        return -1;
    }
    for (int i = 0; i < keep_count; i++) sorted[i] = keep[i];
    for (int i = 1; i < keep_count; i++) {
        for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
            int t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    }
    unsigned int low = 3;
    for (int i = 0; i <= keep_count; i++) {
        unsigned int high = i < keep_count ? (unsigned int)sorted[i] : ~0u;
        if (i < keep_count && sorted[i] < 3) continue;
        if (high > low) {
            unsigned int last = i < keep_count ? high - 1 : ~0u;
            if (syscall(SYS_close_range, low, last, 0) != 0) {
                unsigned int bound = i < keep_count ? high : 65536;
                for (unsigned int fd = low; fd < bound; fd++) close((int)fd);
            }
        }
        if (i < keep_count) low = high + 1;
    }
    return 0;
}

int vq_sandbox_lower_limits(unsigned long open_files) {
    struct rlimit files = {open_files, open_files};
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_NOFILE, &files) != 0) return -1;
    if (setrlimit(RLIMIT_NPROC, &none) != 0) return -1;
    return setrlimit(RLIMIT_CORE, &none);
}

int vq_sandbox_lower_limits_keeping_threads(unsigned long open_files) {
    struct rlimit files = {open_files, open_files};
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_NOFILE, &files) != 0) return -1;
    return setrlimit(RLIMIT_CORE, &none);
}

long vq_sandbox_attempt(const char *name) {
    if (strcmp(name, "openat") == 0) return syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY);
    if (strcmp(name, "socket") == 0) return syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    if (strcmp(name, "connect") == 0) {
        struct sockaddr_un address;
        memset(&address, 0, sizeof address);
        address.sun_family = AF_UNIX;
        return syscall(SYS_connect, 0, &address, sizeof address);
    }
    if (strcmp(name, "execve") == 0) {
        char *argv[] = {"/bin/true", NULL};
        char *envp[] = {NULL};
        return syscall(SYS_execve, "/bin/true", argv, envp);
    }
    if (strcmp(name, "fork") == 0) return syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (strcmp(name, "kill") == 0) return syscall(SYS_kill, 1, 0);
    if (strcmp(name, "ptrace") == 0) return syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
    if (strcmp(name, "mmap-exec") == 0) {
        return syscall(SYS_mmap, 0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (strcmp(name, "mprotect-exec") == 0) {
        static char page[8192] __attribute__((aligned(4096)));
        return syscall(SYS_mprotect, page, 4096, PROT_READ | PROT_EXEC);
    }
    if (strcmp(name, "write-foreign-fd") == 0) return syscall(SYS_write, 1, "x", 1);
    if (strcmp(name, "getpid") == 0) return syscall(SYS_getpid);
    if (strcmp(name, "sigaction-sigsys") == 0 || strcmp(name, "sigaction-sigusr1") == 0) {
        // Only reads the current action (no new one): the filter judges the signal number alone.
        unsigned long old[4] = {0};
        return syscall(SYS_rt_sigaction, strcmp(name, "sigaction-sigsys") == 0 ? SIGSYS : SIGUSR1, NULL, old, 8);
    }
    char byte = 0;
    if (strcmp(name, "read-kick") == 0) return syscall(SYS_read, 4, &byte, 0);
    if (strcmp(name, "sendto-kick") == 0) return syscall(SYS_sendto, 4, &byte, 1, MSG_DONTWAIT, NULL, 0);
    if (strcmp(name, "recvfrom-call") == 0) return syscall(SYS_recvfrom, 5, &byte, 1, MSG_DONTWAIT, NULL, NULL);
    return -2;
}
