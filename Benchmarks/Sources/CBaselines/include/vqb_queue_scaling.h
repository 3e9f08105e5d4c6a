// The queue-scaling scenario's helper (Sources/VirtqueueBench/QueueScaling.swift).
#ifndef VQB_QUEUE_SCALING_H
#define VQB_QUEUE_SCALING_H

/// Lets the calling thread run on every CPU (threads and processes it starts inherit that).
/// Returns 0, or errno.
int vqb_unpin_thread(void);

#endif
