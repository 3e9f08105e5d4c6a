import Testing

/// Every suite of this target, run one test at a time: several count this process's open
/// descriptors, which a test running beside them would disturb, and the cross-process ones share
/// the machine's two cores.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct SharedMemoryTests {}
