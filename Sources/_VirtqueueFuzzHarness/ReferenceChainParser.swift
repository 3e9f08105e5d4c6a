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
    /// The bus ranges buffers may use: each mapping cut to the buffer area, in bus order.
    let windows: [Range<UInt64>]
    let queueSize: Int

    init(memory: FuzzMemory, addresses: SplitRingAddresses, bufferArea: Range<UInt64>?, indirectNegotiated: Bool) {
        self.memory = memory
        self.addresses = addresses
        self.bufferArea = bufferArea
        self.indirectNegotiated = indirectNegotiated
        self.queueSize = addresses.placement.size
        self.windows = memory.mappings.compactMap { mapping in
            let range = mapping.busRange
            guard let area = bufferArea else { return range }
            let low = max(range.lowerBound, area.lowerBound)
            let high = min(range.upperBound, area.upperBound)
            return low < high ? low..<high : nil
        }.sorted { $0.lowerBound < $1.lowerBound }
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

    /// Appends the pieces of a buffer, one per mapping it crosses, to `segments`; `false` (and
    /// nothing appended) when any byte of it is not mapped inside the buffer area, or it
    /// overflows.
    func translate(_ address: UInt64, _ length: UInt32, writable: Bool, into segments: inout [Segment]) -> Bool {
        let (end, overflow) = address.addingReportingOverflow(UInt64(length))
        guard !overflow else { return false }
        if let area = bufferArea, !(address >= area.lowerBound && end <= area.upperBound) { return false }
        guard length > 0 else {
            // An empty buffer needs only its address mapped, or at a mapping's end.
            guard windows.contains(where: { $0.lowerBound <= address && address <= $0.upperBound }) else {
                return false
            }
            segments.append(Segment(address: address, length: 0, writable: writable))
            return true
        }
        // The pieces must add up to the buffer; then they are its segments, in bus order.
        var covered: UInt64 = 0
        for window in windows {
            let low = max(window.lowerBound, address)
            let high = min(window.upperBound, end)
            if low < high { covered += high - low }
        }
        guard covered == UInt64(length) else { return false }
        for window in windows {
            let low = max(window.lowerBound, address)
            let high = min(window.upperBound, end)
            if low < high { segments.append(Segment(address: low, length: UInt32(high - low), writable: writable)) }
        }
        return true
    }

    /// Whether an indirect table lies inside one mapping, inside the buffer area.
    func tableFits(_ address: UInt64, _ length: UInt32) -> Bool {
        let (end, overflow) = address.addingReportingOverflow(UInt64(length))
        return !overflow && windows.contains { $0.lowerBound <= address && end <= $0.upperBound }
    }

    /// The segments of a chain so far, and whether a writable one was seen.
    struct Collector {
        var segments: [Segment]
        var sawWritable = false

        init() {
            segments = []
            segments.reserveCapacity(8)
        }

        /// Adds a buffer: `nil` when it is mapped and in order, else the refusal.
        mutating func add(
            _ parser: ReferenceChainParser,
            _ address: UInt64,
            _ length: UInt32,
            _ flags: UInt16
        ) -> Outcome? {
            let writable = flags & 2 != 0
            let count = segments.count
            guard parser.translate(address, length, writable: writable, into: &segments) else {
                return .invalid("buffer 0x\(String(address, radix: 16))+\(length) is not mapped", [.bufferOutOfRange])
            }
            if !writable && sawWritable {
                segments.removeSubrange(count...)
                return .invalid("readable after writable", [.writableBeforeReadable])
            }
            sawWritable = sawWritable || writable
            return nil
        }
    }

    /// A loop the visited set finds at its first repeat, the core finds after N steps; on the
    /// way round it may meet a readable descriptor after a writable one first.
    static let loop: [VirtqueueError.Code] = [.descriptorLoop, .writableBeforeReadable]

    /// The indirect table `entry` points at, after `descriptors` direct descriptors: its rules,
    /// then its entries — split ones chained by `next`, packed ones (`packed`) used first to last
    /// with every flag but `WRITE` and `INDIRECT` ignored (wire-format §12.4).
    func indirect(
        _ entry: (address: UInt64, length: UInt32, flags: UInt16, next: UInt16),
        after descriptors: Int,
        packed: Bool,
        into collector: inout Collector
    ) -> Outcome {
        guard indirectNegotiated else { return .invalid("INDIRECT without the feature", [.indirectNotNegotiated]) }
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
        var tableVisited = VisitedSet(count: tableCount)
        var tableIndex = 0
        while true {
            guard tableVisited.insert(tableIndex) else { return .invalid("indirect loop", Self.loop) }
            var inner = descriptor(at: entry.address + 16 * UInt64(tableIndex))
            // A packed entry's `flags` are where a split one's `next` is (its `id` is ignored).
            if packed { inner.flags = inner.next }
            guard inner.flags & 4 == 0 else { return .invalid("nested INDIRECT", [.nestedIndirect]) }
            if let problem = collector.add(self, inner.address, inner.length, inner.flags) { return problem }
            if packed {
                guard tableIndex + 1 < tableCount else { return .valid(collector.segments) }
                tableIndex += 1
                continue
            }
            guard inner.flags & 1 != 0 else { return .valid(collector.segments) }
            guard Int(inner.next) < tableCount else {
                return .invalid("indirect next \(inner.next)", [.nextOutOfRange])
            }
            tableIndex = Int(inner.next)
        }
    }

    /// Parses the chain whose head is `head` (already checked to be below the queue size).
    func parse(head: Int) -> Outcome {
        var collector = Collector()
        var descriptors = 0
        var visited = VisitedSet(count: queueSize)
        var index = head
        while true {
            guard visited.insert(index) else { return .invalid("descriptor \(index) visited twice", Self.loop) }
            let entry = descriptor(at: addresses.descriptor(index))
            if entry.flags & 4 != 0 {
                return indirect(entry, after: descriptors, packed: false, into: &collector)
            }
            if let problem = collector.add(self, entry.address, entry.length, entry.flags) { return problem }
            descriptors += 1
            guard entry.flags & 1 != 0 else { return .valid(collector.segments) }
            guard Int(entry.next) < queueSize else { return .invalid("next \(entry.next)", [.nextOutOfRange]) }
            index = Int(entry.next)
        }
    }

    // MARK: The packed ring

    /// What the device must do at its position on a packed ring (wire-format §12.3, trust-model
    /// "The packed ring"), stated as the spec's steps in order: the descriptor at the position
    /// is available for its wrap counter, or "nothing yet", or — used with that counter — in no
    /// legal ring; the list runs on through `NEXT`, each descriptor available for the wrap
    /// counter at its own position, at most N of them, an `INDIRECT` one only first and alone,
    /// none over a descriptor still in flight (at most `room` of them: N less the descriptors
    /// between the device's used position and its position); the last carries the buffer ID, which is below N and not held (`held`); then the chain
    /// rules every format shares.
    enum PackedOutcome: CustomStringConvertible {
        case empty
        /// Refused before the buffer ID is known to be usable.
        case violation(String, [VirtqueueError.Code])
        /// A list of `count` descriptors with buffer ID `id`.
        case list(id: UInt16, count: Int, Outcome)

        var description: String {
            switch self {
            case .empty: "nil"
            case .violation(let why, _): "a violation (\(why))"
            case .list(let id, let count, let outcome): "buffer \(id) of \(count) descriptors: \(outcome)"
            }
        }
    }

    /// A packed descriptor `{addr, len, id, flags}` at ring position `index`.
    func packedDescriptor(_ index: Int) -> (address: UInt64, length: UInt32, id: UInt16, flags: UInt16) {
        let raw = descriptor(at: addresses.descriptor(index))
        return (raw.address, raw.length, raw.flags, raw.next)
    }

    /// Whether `flags` make a descriptor available for wrap counter `wrap`: `AVAIL` = `wrap`,
    /// `USED` ≠ `wrap`.
    static func available(_ flags: UInt16, wrap: Bool) -> Bool {
        (flags & 0x80 != 0) == wrap && (flags & 0x8000 != 0) != wrap
    }

    /// Parses the list at position `index` with wrap counter `wrap`; `held[id]` says whether the
    /// device holds buffer `id`, and `room` how many descriptors the driver may have made
    /// available from the position on.
    func parsePacked(index start: Int, wrap startWrap: Bool, held: [Bool], room: Int) -> PackedOutcome {
        let first = packedDescriptor(start).flags
        guard Self.available(first, wrap: startWrap) else {
            let used = (first & 0x80 != 0) == startWrap && (first & 0x8000 != 0) == startWrap
            return used
                ? .violation(
                    "used flags 0x\(String(first, radix: 16)) at the device's position",
                    [.wrapCounterMismatch]
                ) : .empty
        }
        // The list's extent first: its descriptors, at positions `start` on, number `count`.
        var count = 0
        var index = start
        var wrap = startWrap
        var last = packedDescriptor(start)
        while true {
            let entry = packedDescriptor(index)
            guard Self.available(entry.flags, wrap: wrap) else {
                return .violation("descriptor \(index) of the list is not available", [.descriptorNotAvailable])
            }
            guard count == 0 || entry.flags & 4 == 0 else {
                return .violation("INDIRECT descriptor \(index) inside a list", [.indirectWithNext])
            }
            count += 1
            last = entry
            guard count <= room else {
                return .violation(
                    "the list reaches \(count) descriptors, over the \(queueSize - room) in flight",
                    [.availableIndexJump]
                )
            }
            if entry.flags & 1 == 0 || entry.flags & 4 != 0 { break }
            guard count < queueSize else { return .violation("a list longer than the queue", [.peerChainTooLong]) }
            index = (index + 1) % queueSize
            if index == 0 { wrap.toggle() }
        }
        let id = last.id
        guard Int(id) < queueSize else { return .violation("buffer ID \(id) out of range", [.headOutOfRange]) }
        guard !held[Int(id)] else { return .violation("buffer \(id) is already held", [.headAlreadyInFlight]) }
        // Then its buffers, from the same descriptors.
        var collector = Collector()
        for step in 0..<count {
            let entry = packedDescriptor((start + step) % queueSize)
            if entry.flags & 4 != 0 {
                let outcome = indirect(
                    (entry.address, entry.length, entry.flags, 0),
                    after: 0,
                    packed: true,
                    into: &collector
                )
                return .list(id: id, count: count, outcome)
            }
            if let problem = collector.add(self, entry.address, entry.length, entry.flags) {
                return .list(id: id, count: count, problem)
            }
        }
        return .list(id: id, count: count, .valid(collector.segments))
    }
}

/// The reference parser's visited set: a bit per index up to 64 (every queue the harnesses
/// build), an array beyond.
struct VisitedSet {
    var bits: UInt64 = 0
    var large: [Bool]

    init(count: Int) {
        large = count > 64 ? [Bool](repeating: false, count: count) : []
    }

    /// Adds `index` (below the count); `false` if it was there already.
    mutating func insert(_ index: Int) -> Bool {
        if large.isEmpty {
            let bit: UInt64 = 1 << UInt64(index)
            defer { bits |= bit }
            return bits & bit == 0
        }
        defer { large[index] = true }
        return !large[index]
    }
}
