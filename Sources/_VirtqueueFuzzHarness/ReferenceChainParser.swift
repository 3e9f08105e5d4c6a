import Virtqueue

/// An independent statement of the device-side chain rules (virtio 1.x §2.7.5 and
/// `docs/trust-model.md`) and of address translation, written for clarity rather than speed:
/// the fuzz oracle the real parser is compared with.
///
/// It differs from `ChainParser` and `AddressMap` in method on purpose: loops are found with a
/// visited set instead of a step count; a buffer is translated by intersecting it with every
/// mapping and checking that the pieces add up to its length (instead of walking from window to
/// window); descriptors are read through the harness's own translation; nothing is copied into
/// a store. The two must agree on whether a chain is valid and, when it is, on every segment —
/// one per mapping a buffer crosses, in bus order.
struct ReferenceChainParser {
    /// A segment as bus addresses: `length` bytes at `address`.
    struct Segment: Equatable, CustomStringConvertible {
        var address: UInt64
        var length: UInt32
        var writable: Bool

        var description: String { "\(writable ? "w" : "r")0x\(String(address, radix: 16))+\(length)" }
    }

    enum Outcome: Equatable, CustomStringConvertible {
        case valid([Segment])
        /// Why, and the error codes the core may report for it.
        case invalid(String, [VirtqueueError.Code])

        var description: String {
            switch self {
            case .valid(let segments): "valid(\(segments))"
            case .invalid(let why, let codes): "invalid(\(why); \(codes))"
            }
        }
    }

    let memory: FuzzMemory
    let addresses: SplitRingAddresses
    /// Where buffers and indirect tables must lie besides inside the mappings; `nil` for anywhere.
    let bufferArea: Range<UInt64>?
    let indirectNegotiated: Bool

    var queueSize: Int { addresses.placement.size }

    /// The bus ranges buffers may use: each mapping cut to the buffer area.
    var windows: [Range<UInt64>] {
        memory.mappings.compactMap { mapping in
            let range = mapping.busRange
            guard let area = bufferArea else { return range }
            let low = max(range.lowerBound, area.lowerBound)
            let high = min(range.upperBound, area.upperBound)
            return low < high ? low..<high : nil
        }
    }

    /// Reads the descriptor at bus address `address`, which the caller checked is mapped (an
    /// unmapped one would read as zeros; the harness never traps on what the input wrote).
    func descriptor(at address: UInt64) -> (address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        guard let pointer = memory.pointer(at: address, count: 16) else { return (0, 0, 0, 0) }
        let raw = UnsafeRawPointer(pointer)
        return (
            UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self)),
            UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
            UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 12, as: UInt16.self)),
            UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
        )
    }

    /// The pieces of a buffer, one per mapping it crosses, or `nil` when any byte of it is not
    /// mapped inside the buffer area, or it overflows.
    func translate(_ address: UInt64, _ length: UInt32, writable: Bool) -> [Segment]? {
        let (end, overflow) = address.addingReportingOverflow(UInt64(length))
        guard !overflow else { return nil }
        if let area = bufferArea, !(address >= area.lowerBound && end <= area.upperBound) { return nil }
        let windows = self.windows.sorted { $0.lowerBound < $1.lowerBound }
        guard length > 0 else {
            // An empty buffer needs only its address mapped, or at a mapping's end.
            guard windows.contains(where: { $0.lowerBound <= address && address <= $0.upperBound }) else { return nil }
            return [Segment(address: address, length: 0, writable: writable)]
        }
        var pieces: [Segment] = []
        var covered: UInt64 = 0
        for window in windows {
            let low = max(window.lowerBound, address)
            let high = min(window.upperBound, end)
            guard low < high else { continue }
            pieces.append(Segment(address: low, length: UInt32(high - low), writable: writable))
            covered += high - low
        }
        return covered == UInt64(length) ? pieces : nil
    }

    /// Whether an indirect table lies inside one mapping, inside the buffer area.
    func tableFits(_ address: UInt64, _ length: UInt32) -> Bool {
        let (end, overflow) = address.addingReportingOverflow(UInt64(length))
        return !overflow && windows.contains { $0.lowerBound <= address && end <= $0.upperBound }
    }

    /// Parses the chain whose head is `head` (already checked to be below the queue size).
    func parse(head: Int) -> Outcome {
        var segments: [Segment] = []
        var sawWritable = false
        var descriptors = 0

        func add(_ address: UInt64, _ length: UInt32, _ flags: UInt16) -> Outcome? {
            let writable = flags & 2 != 0
            guard let pieces = translate(address, length, writable: writable) else {
                return .invalid("buffer 0x\(String(address, radix: 16))+\(length) is not mapped", [.bufferOutOfRange])
            }
            if !writable && sawWritable { return .invalid("readable after writable", [.writableBeforeReadable]) }
            sawWritable = sawWritable || writable
            segments += pieces
            return nil
        }

        // A loop the visited set finds at its first repeat, the core finds after N steps; on
        // the way round it may meet a readable descriptor after a writable one first.
        let loop: [VirtqueueError.Code] = [.descriptorLoop, .writableBeforeReadable]
        var visited = [Bool](repeating: false, count: queueSize)
        var index = head
        while true {
            guard !visited[index] else { return .invalid("descriptor \(index) visited twice", loop) }
            visited[index] = true
            let entry = descriptor(at: addresses.descriptor(index))
            if entry.flags & 4 != 0 {
                guard indirectNegotiated else {
                    return .invalid("INDIRECT without the feature", [.indirectNotNegotiated])
                }
                guard entry.flags & 1 == 0 else { return .invalid("INDIRECT with NEXT", [.indirectWithNext]) }
                guard entry.length > 0, entry.length % 16 == 0 else {
                    return .invalid("indirect length \(entry.length)", [.indirectLengthInvalid])
                }
                guard tableFits(entry.address, entry.length) else {
                    return .invalid("indirect table not inside one mapping", [.indirectOutOfRange])
                }
                let tableCount = Int(entry.length / 16)
                guard descriptors + tableCount <= queueSize else {
                    return .invalid("indirect table too long", [.peerChainTooLong])
                }
                var tableVisited = [Bool](repeating: false, count: tableCount)
                var tableIndex = 0
                while true {
                    guard !tableVisited[tableIndex] else { return .invalid("indirect loop", loop) }
                    tableVisited[tableIndex] = true
                    let inner = descriptor(at: entry.address + 16 * UInt64(tableIndex))
                    guard inner.flags & 4 == 0 else { return .invalid("nested INDIRECT", [.nestedIndirect]) }
                    if let problem = add(inner.address, inner.length, inner.flags) { return problem }
                    guard inner.flags & 1 != 0 else { return .valid(segments) }
                    guard Int(inner.next) < tableCount else {
                        return .invalid("indirect next \(inner.next)", [.nextOutOfRange])
                    }
                    tableIndex = Int(inner.next)
                }
            }
            if let problem = add(entry.address, entry.length, entry.flags) { return problem }
            descriptors += 1
            guard entry.flags & 1 != 0 else { return .valid(segments) }
            guard Int(entry.next) < queueSize else { return .invalid("next \(entry.next)", [.nextOutOfRange]) }
            index = Int(entry.next)
        }
    }
}
