/// An inflight description (GET_INFLIGHT_FD request and reply, SET_INFLIGHT_FD):
/// `{u64 mmap_size, u64 mmap_offset, u16 num_queues, u16 queue_size}`, 24 bytes on the wire
/// (QEMU's C struct has 4 bytes of tail padding, and QEMU sends `sizeof`).
public struct VhostUserInflightDescription: Hashable, Sendable {
    /// The payload's size on the wire.
    public static let size = 24

    /// The size of the inflight area in its file descriptor (0 in a GET_INFLIGHT_FD request).
    public var mmapSize: UInt64
    /// Where the area starts in its file descriptor (0 in a GET_INFLIGHT_FD request).
    public var mmapOffset: UInt64
    /// The number of queues the area tracks.
    public var queueCount: UInt16
    /// The size of each queue.
    public var queueSize: UInt16

    /// An inflight description.
    public init(mmapSize: UInt64 = 0, mmapOffset: UInt64 = 0, queueCount: UInt16, queueSize: UInt16) {
        self.mmapSize = mmapSize
        self.mmapOffset = mmapOffset
        self.queueCount = queueCount
        self.queueSize = queueSize
    }

    func encode(into writer: inout ByteWriter) {
        writer.append(mmapSize)
        writer.append(mmapOffset)
        writer.append(queueCount)
        writer.append(queueSize)
        writer.append(UInt32(0))
    }

    static func decode(_ reader: inout ByteReader) -> VhostUserInflightDescription {
        VhostUserInflightDescription(
            mmapSize: reader.u64(),
            mmapOffset: reader.u64(),
            queueCount: reader.u16(),
            queueSize: reader.u16()
        )
    }

    /// Checks the queue count (1…`maxQueues`) and queue size (1…32768); with `checkingArea`, an
    /// area of size above 0 whose `mmap_offset + mmap_size` is at most 2^63 - 1.
    func validate(_ context: String, maxQueues: Int, checkingArea: Bool) throws(VhostUserError) {
        guard queueCount >= 1, Int(queueCount) <= maxQueues else {
            throw VhostUserError(
                .invalidValue,
                "\(context): inflight queue count \(queueCount) is not in 1...\(maxQueues)"
            )
        }
        guard queueSize >= 1, Int(queueSize) <= VhostUserLimits.maxQueueSize else {
            throw VhostUserError(.invalidValue, "\(context): inflight queue size \(queueSize) is not in 1...32768")
        }
        if checkingArea {
            guard mmapSize > 0 else {
                throw VhostUserError(.invalidValue, "\(context): inflight area of size 0")
            }
            let end = mmapOffset.addingReportingOverflow(mmapSize)
            guard !end.overflow, end.partialValue <= UInt64(Int64.max) else {
                throw VhostUserError(
                    .invalidValue,
                    "\(context): inflight mmap offset \(hex(mmapOffset)) + size \(hex(mmapSize)) is past 2^63 - 1"
                )
            }
        }
    }
}
