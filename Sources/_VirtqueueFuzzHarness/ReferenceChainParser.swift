/// An independent statement of the device-side chain rules (virtio 1.x §2.7.5 and
/// `docs/trust-model.md`), written for clarity rather than speed: the fuzz oracle the real
/// parser is compared with.
///
/// It differs from `ChainParser` in method on purpose: loops are found with a visited set
/// instead of a step count, and nothing is copied into a store. The two must agree on whether
/// a chain is valid and, when it is, on every segment.
struct ReferenceChainParser {
    struct Segment: Equatable {
        var offset: UInt64
        var length: UInt32
        var writable: Bool
    }

    enum Outcome: Equatable {
        case valid([Segment])
        case invalid(String)
    }

    let bytes: UnsafeRawBufferPointer
    let queueSize: Int
    let descriptorTable: Int
    let dataArea: Range<UInt64>
    let indirectNegotiated: Bool

    func descriptor(at offset: Int) -> (address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        (
            UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
            UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)),
            UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt16.self)),
            UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 14, as: UInt16.self))
        )
    }

    func insideDataArea(_ address: UInt64, _ length: UInt32) -> Bool {
        // Wide arithmetic: no overflow possible.
        let end = address.addingReportingOverflow(UInt64(length))
        return !end.overflow && address >= dataArea.lowerBound && end.partialValue <= dataArea.upperBound
    }

    /// Parses the chain whose head is `head` (already checked to be below the queue size).
    func parse(head: Int) -> Outcome {
        var segments: [Segment] = []
        var sawWritable = false

        func add(_ address: UInt64, _ length: UInt32, _ flags: UInt16) -> String? {
            guard insideDataArea(address, length) else { return "buffer \(address)+\(length) outside the data area" }
            let writable = flags & 2 != 0
            if !writable && sawWritable { return "readable after writable" }
            sawWritable = sawWritable || writable
            guard segments.count < queueSize else { return "more than \(queueSize) segments" }
            segments.append(Segment(offset: address, length: length, writable: writable))
            return nil
        }

        var visited = [Bool](repeating: false, count: queueSize)
        var index = head
        while true {
            guard !visited[index] else { return .invalid("descriptor \(index) visited twice") }
            visited[index] = true
            let entry = descriptor(at: descriptorTable + 16 * index)
            if entry.flags & 4 != 0 {
                guard indirectNegotiated else { return .invalid("INDIRECT without the feature") }
                guard entry.flags & 1 == 0 else { return .invalid("INDIRECT with NEXT") }
                guard entry.length > 0, entry.length % 16 == 0 else {
                    return .invalid("indirect length \(entry.length)")
                }
                guard insideDataArea(entry.address, entry.length) else { return .invalid("indirect table outside") }
                let tableCount = Int(entry.length / 16)
                guard segments.count + tableCount <= queueSize else { return .invalid("indirect table too long") }
                var tableVisited = [Bool](repeating: false, count: tableCount)
                var tableIndex = 0
                while true {
                    guard !tableVisited[tableIndex] else { return .invalid("indirect loop") }
                    tableVisited[tableIndex] = true
                    let inner = descriptor(at: Int(entry.address) + 16 * tableIndex)
                    guard inner.flags & 4 == 0 else { return .invalid("nested INDIRECT") }
                    if let problem = add(inner.address, inner.length, inner.flags) { return .invalid(problem) }
                    guard inner.flags & 1 != 0 else { return .valid(segments) }
                    guard Int(inner.next) < tableCount else { return .invalid("indirect next \(inner.next)") }
                    tableIndex = Int(inner.next)
                }
            }
            if let problem = add(entry.address, entry.length, entry.flags) { return .invalid(problem) }
            guard entry.flags & 1 != 0 else { return .valid(segments) }
            guard Int(entry.next) < queueSize else { return .invalid("next \(entry.next)") }
            index = Int(entry.next)
        }
    }
}
