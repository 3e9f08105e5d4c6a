// The queue-scaling scenario's helper: undo the main thread's pin for one thread.
#define _GNU_SOURCE
#include "CBaselines.h"

#include <errno.h>
#include <sched.h>

int vqb_unpin_thread(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : errno;
}
