import FileBackend
import Glibc
import Virtqueue
import VirtqueueConformance

/// The article's example backend under the conformance suite: two mappings of one file, and a
/// socket-pair notifier. It plugs in through nothing but `MemoryRegion` and `Notifier`.
struct FileConformanceBackend: ConformanceBackend {
    var name: String { "file" }

    func withQueueEnds<Visitor: QueueEndsVisitor>(
        layout: RegionLayout,
        _ visitor: Visitor
    ) throws -> Visitor.Output {
        let file = try RegionFile(byteCount: layout.regionSize)
        let notifiers = try SocketNotifier.makePair()
        return try visitor.visit(
            QueueEnds(
                driver: QueueEnd(region: try file.map(), notifier: notifiers.driver, close: notifiers.driver.close),
                device: QueueEnd(region: try file.map(), notifier: notifiers.device, close: notifiers.device.close)
            )
        )
    }

    /// One mapping here; for the other process, a copy of the file's descriptor and the other
    /// socket of the pair — the only copy of it left (the socket notifier is symmetric, so
    /// `side` changes nothing).
    func withProcessEnds<Visitor: ProcessEndsVisitor>(
        layout: RegionLayout,
        keeping side: QueueSide,
        _ visitor: Visitor
    ) throws -> ProcessEndsOutcome<Visitor.Output> {
        let file = try RegionFile(byteCount: layout.regionSize)
        let (local, socket) = try Self.notifierAndPeerSocket()
        let remote = PortableEnd(
            mappings: [PortableMapping(descriptor: try duplicate(file.fileDescriptor), byteCount: layout.regionSize)],
            notifier: PortableNotifier(socket: socket)
        )
        return .visited(
            try visitor.visit(
                ProcessEnds(
                    local: QueueEnd(region: try file.map(), notifier: local, close: local.close),
                    remote: remote
                )
            )
        )
    }

    /// A notifier, and a copy of its peer's socket that is the only one left: the peer's
    /// notifier object goes away when this returns, closing its own descriptor.
    static func notifierAndPeerSocket() throws -> (SocketNotifier, CInt) {
        let pair = try SocketNotifier.makePair()
        return (pair.driver, try duplicate(pair.device.socket))
    }
}

/// A close-on-exec copy of `descriptor`.
func duplicate(_ descriptor: CInt) throws(SystemCallError) -> CInt {
    let copy = fcntl(descriptor, F_DUPFD_CLOEXEC, 0)
    guard copy >= 0 else { throw SystemCallError("fcntl(F_DUPFD_CLOEXEC)", errno: errno) }
    return copy
}
