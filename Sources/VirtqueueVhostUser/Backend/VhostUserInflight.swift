import CVirtqueueSystem
import Glibc
import Synchronization
import SystemPackage
import Virtqueue

/// The inflight area of `VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD`: shared memory the back-end
/// records every request it takes in, and the front-end keeps across back-end restarts, so a
/// back-end that died mid-request can finish what it had taken.
///
/// The back-end creates it (GET_INFLIGHT_FD: a zeroed memfd), the front-end keeps the fd and
/// hands it to every later connection (SET_INFLIGHT_FD). Per queue, for a split ring of size N
/// (the layout QEMU's libvhost-user and DPDK use; `docs/vhost-user.md`):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | features (0) |
/// | 8 | 2 | version (1 once initialised) |
/// | 10 | 2 | desc_num (N) |
/// | 12 | 2 | last_batch_head |
/// | 14 | 2 | used_idx |
/// | 16 + 16·i | 16 | desc[i]: u8 inflight, 5 bytes padding, u16 next, u64 counter |
///
/// Each queue's record is `16 + 16·N` bytes rounded up to 64.
///
/// The area is peer memory (the front-end may write it, and it comes back from a previous,
/// possibly compromised, back-end): when a ring starts, its record is read once, checked
/// (version, size, heads below N, no more heads than N) and only then used; during the run the
/// back-end only writes it.
final class VhostUserInflightArea: @unchecked Sendable {
    /// Bytes of the record of a queue of `size` entries.
    static func queueRecordSize(queueSize: Int) -> Int {
        (16 + 16 * queueSize + 63) & ~63
    }

    static let version: UInt16 = 1

    let description: VhostUserInflightDescription
    let fileDescriptor: VhostUserFileDescriptor
    private let mapping: MappedRegion

    /// The area QEMU asked for with GET_INFLIGHT_FD: a new, zeroed memfd for `description`'s
    /// queue count and size.
    ///
    /// - Throws: ``VhostUserError`` if the memfd cannot be created or mapped.
    static func create(for request: VhostUserInflightDescription) throws(VhostUserError) -> VhostUserInflightArea {
        let size = UInt64(queueRecordSize(queueSize: Int(request.queueSize))) * UInt64(request.queueCount)
        let fd = vq_memfd_create("vhost-user-inflight", VQ_MFD_CLOEXEC | VQ_MFD_ALLOW_SEALING)
        guard fd >= 0 else { throw .system("GET_INFLIGHT_FD: memfd_create", Errno(rawValue: errno)) }
        let owner = VhostUserFileDescriptor(owning: fd)
        while ftruncate(fd, off_t(size)) != 0 {
            guard errno == EINTR else { throw .system("GET_INFLIGHT_FD: ftruncate", Errno(rawValue: errno)) }
        }
        let description = VhostUserInflightDescription(
            mmapSize: size,
            mmapOffset: 0,
            queueCount: request.queueCount,
            queueSize: request.queueSize
        )
        return try VhostUserInflightArea(description, owner, context: "GET_INFLIGHT_FD")
    }

    /// The area the front-end handed over with SET_INFLIGHT_FD.
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidInflightArea`` if it is too small for
    ///   its queue count and size, or what mapping it throws.
    static func adopt(
        _ description: VhostUserInflightDescription,
        _ descriptor: VhostUserFileDescriptor
    ) throws(VhostUserError) -> VhostUserInflightArea {
        let needed = UInt64(queueRecordSize(queueSize: Int(description.queueSize))) * UInt64(description.queueCount)
        guard description.mmapSize >= needed else {
            throw VhostUserError(
                .invalidInflightArea,
                "SET_INFLIGHT_FD: an area of \(description.mmapSize) bytes is smaller than the \(needed) that "
                    + "\(description.queueCount) queues of size \(description.queueSize) need"
            )
        }
        return try VhostUserInflightArea(description, descriptor, context: "SET_INFLIGHT_FD")
    }

    private init(
        _ description: VhostUserInflightDescription,
        _ descriptor: VhostUserFileDescriptor,
        context: String
    ) throws(VhostUserError) {
        let region = VhostUserMemoryRegion(
            guestPhysicalAddress: 0,
            size: description.mmapSize,
            userAddress: 0,
            mmapOffset: description.mmapOffset
        )
        self.mapping = try MappedRegion(region, descriptor, context: context)
        self.description = description
        self.fileDescriptor = descriptor
    }

    /// The record of queue `index` for a ring of `size` entries, checked.
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidInflightArea`` if the area tracks
    ///   fewer queues or another size.
    func queue(_ index: Int, size: Int) throws(VhostUserError) -> InflightQueue {
        guard index < Int(description.queueCount) else {
            throw VhostUserError(
                .invalidInflightArea,
                "queue \(index): the inflight area tracks \(description.queueCount) queues"
            )
        }
        guard size == Int(description.queueSize) else {
            throw VhostUserError(
                .invalidInflightArea,
                "queue \(index): the ring has \(size) entries, the inflight area was made for \(description.queueSize)"
            )
        }
        let stride = Self.queueRecordSize(queueSize: size)
        guard let base = mapping.bytes.baseAddress else {
            throw VhostUserError(.invalidInflightArea, "queue \(index): the inflight area is empty")
        }
        return InflightQueue(area: self, record: base + index * stride, size: size)
    }
}

/// One queue's record in the inflight area, and the ``Virtqueue/RequestJournal`` that keeps it.
struct InflightQueue: RequestJournal, @unchecked Sendable {
    /// Keeps the mapping alive while the ring runs.
    let area: VhostUserInflightArea
    let record: UnsafeMutableRawPointer
    let size: Int
    /// The order requests were taken in (`desc[i].counter`).
    var counter: UInt64 = 1

    static let versionOffset = 8
    static let countOffset = 10
    static let lastBatchHeadOffset = 12
    static let usedIndexOffset = 14
    static let descriptorsOffset = 16

    init(area: VhostUserInflightArea, record: UnsafeMutableRawPointer, size: Int) {
        self.area = area
        self.record = record
        self.size = size
    }

    func entry(_ head: UInt16) -> UnsafeMutableRawPointer {
        record + Self.descriptorsOffset + 16 * Int(head)
    }

    /// What a starting ring must do about the requests a previous back-end left in flight.
    struct Resumption: Equatable {
        /// The heads to serve again, oldest first.
        var heads: [UInt16]
        /// The cursor to start the ring at: `used.idx` plus what is in flight.
        var cursor: QueueCursor
    }

    /// Reads the record once (the ring's `used.idx` is `usedIndex`), checks it, and returns what
    /// to resume; a record never initialised is initialised, and nothing is in flight.
    ///
    /// Per the protocol: if the record's `used_idx` differs from the ring's, the back-end died
    /// after it published its last batch and before it recorded that, so `last_batch_head` is no
    /// longer in flight. Heads still marked are served again in the order of their counters, and
    /// the ring starts `used.idx + count` (overriding SET_VRING_BASE, which a front-end whose
    /// back-end died cannot know).
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidInflightArea`` naming the value.
    mutating func resume(usedIndex: UInt16, queue index: Int) throws(VhostUserError) -> Resumption {
        let version = record.loadUnaligned(fromByteOffset: Self.versionOffset, as: UInt16.self)
        if UInt16(littleEndian: version) == 0 {
            // A fresh area: claim it for a ring of this size.
            record.initializeMemory(
                as: UInt8.self,
                repeating: 0,
                count: VhostUserInflightArea.queueRecordSize(queueSize: size)
            )
            record.storeBytes(of: UInt16(size).littleEndian, toByteOffset: Self.countOffset, as: UInt16.self)
            record.storeBytes(of: usedIndex.littleEndian, toByteOffset: Self.usedIndexOffset, as: UInt16.self)
            record.storeBytes(
                of: VhostUserInflightArea.version.littleEndian,
                toByteOffset: Self.versionOffset,
                as: UInt16.self
            )
            return Resumption(heads: [], cursor: QueueCursor(nextAvailable: usedIndex, nextUsed: usedIndex))
        }
        guard UInt16(littleEndian: version) == VhostUserInflightArea.version else {
            throw VhostUserError(
                .invalidInflightArea,
                "queue \(index): inflight record version \(UInt16(littleEndian: version)) is not 1"
            )
        }
        let count = UInt16(littleEndian: record.loadUnaligned(fromByteOffset: Self.countOffset, as: UInt16.self))
        guard Int(count) == size else {
            throw VhostUserError(
                .invalidInflightArea,
                "queue \(index): inflight record desc_num \(count) is not the ring's size \(size)"
            )
        }
        let recordedUsed = UInt16(
            littleEndian: record.loadUnaligned(fromByteOffset: Self.usedIndexOffset, as: UInt16.self)
        )
        if recordedUsed != usedIndex {
            let last = UInt16(
                littleEndian: record.loadUnaligned(fromByteOffset: Self.lastBatchHeadOffset, as: UInt16.self)
            )
            guard Int(last) < size else {
                throw VhostUserError(
                    .invalidInflightArea,
                    "queue \(index): inflight last_batch_head \(last) is not below the ring's size \(size)"
                )
            }
            entry(last).storeBytes(of: 0, as: UInt8.self)
            record.storeBytes(of: usedIndex.littleEndian, toByteOffset: Self.usedIndexOffset, as: UInt16.self)
        }
        // Read each entry once into private memory, then decide.
        var marked: [(counter: UInt64, head: UInt16)] = []
        for head in 0..<UInt16(size) {
            let flag = entry(head).load(as: UInt8.self)
            guard flag != 0 else { continue }
            guard flag == 1 else {
                throw VhostUserError(
                    .invalidInflightArea,
                    "queue \(index): inflight desc[\(head)].inflight is \(flag), not 0 or 1"
                )
            }
            let counter = UInt64(littleEndian: entry(head).loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            marked.append((counter, head))
        }
        marked.sort { $0.counter < $1.counter || ($0.counter == $1.counter && $0.head < $1.head) }
        counter = (marked.last?.counter ?? 0) &+ 1
        let heads = marked.map(\.head)
        return Resumption(
            heads: heads,
            cursor: QueueCursor(nextAvailable: usedIndex &+ UInt16(heads.count), nextUsed: usedIndex)
        )
    }

    mutating func taken(head: UInt16) {
        entry(head).storeBytes(of: counter.littleEndian, toByteOffset: 8, as: UInt64.self)
        counter &+= 1
        atomicStore(entry(head), 1)
    }

    func completing(head: UInt16) {
        record.storeBytes(of: head.littleEndian, toByteOffset: Self.lastBatchHeadOffset, as: UInt16.self)
        atomicFence()
    }

    func completed(head: UInt16, usedIndex: UInt16) {
        atomicStore(entry(head), 0)
        record.storeBytes(of: usedIndex.littleEndian, toByteOffset: Self.usedIndexOffset, as: UInt16.self)
    }

    /// A byte store ordered after everything before it (the counter before the flag).
    private func atomicStore(_ pointer: UnsafeMutableRawPointer, _ value: UInt8) {
        atomicFence()
        pointer.storeBytes(of: value, as: UInt8.self)
    }

    private func atomicFence() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }
}
