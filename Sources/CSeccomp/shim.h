#ifndef CSECCOMP_SHIM_H
#define CSECCOMP_SHIM_H

#include <seccomp.h>

// libseccomp's actions are function-like macros (and SCMP_ACT_TRAP a constant Swift does not
// import reliably); these wrappers make them callable from Swift.
static inline uint32_t cseccomp_act_allow(void) { return SCMP_ACT_ALLOW; }
static inline uint32_t cseccomp_act_kill_process(void) { return SCMP_ACT_KILL_PROCESS; }
static inline uint32_t cseccomp_act_trap(void) { return SCMP_ACT_TRAP; }
static inline uint32_t cseccomp_act_log(void) { return SCMP_ACT_LOG; }
static inline uint32_t cseccomp_act_errno(uint16_t error) { return SCMP_ACT_ERRNO(error); }

#endif
