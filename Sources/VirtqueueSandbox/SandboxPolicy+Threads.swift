extension SandboxPolicy {
    /// The `clone` flags glibc's `pthread_create` passes (`CLONE_VM | CLONE_FS | CLONE_FILES |
    /// CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID |
    /// CLONE_CHILD_CLEARTID`).
    static let threadCloneFlags: UInt64 = 0x3D_0F00

    /// The system calls a serving loop that creates threads (`VirtqueueAsync`: an epoll event
    /// loop and Swift's cooperative pool) needs and this policy does not allow; empty when it
    /// allows them all.
    ///
    /// The list is what is necessary, not what is sufficient: a thread also makes calls of its
    /// own (`set_robust_list`, `rseq`, `rt_sigprocmask`, `mprotect` of its stack guard…), and a
    /// policy that allows these must allow those too. ``deviceLoop`` allows none of them: a
    /// sandboxed device serves with the blocking API.
    public var callsMissingForThreads: [String] {
        func allows(_ name: String) -> Bool {
            rules.contains { rule in
                guard rule.systemCall == name else { return false }
                switch rule.condition {
                case .always: return true
                case .withFlags(argument: 0, let mask): return mask & ~Self.threadCloneFlags == 0
                default: return false
                }
            }
        }
        var missing: [String] = []
        if !allows("clone3") && !allows("clone") { missing.append("clone3 or clone(CLONE_THREAD)") }
        for call in ["futex", "epoll_create1", "epoll_ctl", "eventfd2"] where !allows(call) { missing.append(call) }
        if !allows("epoll_wait") && !allows("epoll_pwait") { missing.append("epoll_wait or epoll_pwait") }
        return missing
    }
}
