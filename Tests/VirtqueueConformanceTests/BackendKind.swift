import VirtqueueConformance

/// Every backend of this package the conformance suite runs on. Adding a backend is one case
/// here, naming its adapter.
enum BackendKind: String, CaseIterable, Sendable {
    case heap
    case file
    case sharedMemory
    case sandbox

    var backend: any ConformanceBackend {
        switch self {
        case .heap: HeapConformanceBackend()
        case .file: FileConformanceBackend()
        case .sharedMemory: SharedMemoryConformanceBackend()
        case .sandbox: SandboxConformanceBackend()
        }
    }
}
