#ifndef C_VIRTQUEUE_RELAX_H
#define C_VIRTQUEUE_RELAX_H

/// The CPU's spin-wait hint, for a loop that polls memory another CPU writes: `pause` on x86,
/// `yield` on Arm. It lets the core back off between loads, so the poll takes the cache line from
/// the writer less often (and a sibling hyperthread gets the pipeline), as the C baselines' spins
/// do (`vqb_cpu_relax`). Nothing on other architectures.
static inline void vq_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

#endif
