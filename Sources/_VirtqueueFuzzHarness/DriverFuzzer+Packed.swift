import Virtqueue

/// The packed ring's operations and checks of ``DriverFuzzer``: the hostile device's writes
/// into the descriptor ring (used descriptors, wire-format §12.3) and its event-suppression
/// structure, and the driver's used-descriptor reader against the harness's model.
extension DriverSession {
    /// Plays op `op` on the packed ring, when it is one that differs from the split ring's:
    ///
    /// | op % 10 | operation |
    /// |---|---|
    /// | 2 | write up to 255 raw bytes anywhere in the descriptor ring |
    /// | 3 | write a used descriptor at the harness's device position naming a chain in flight (or a raw ID), with a right or wrong length, `WRITE` or not, and AVAIL / USED for the position's wrap counter or another pair; the position moves on by that chain's descriptor count (1 for an unknown ID) |
    /// | 4 | move the harness's device position on by 0…N+1, or back to the driver's used position |
    /// | 9 | write the device's event-suppression structure (`off_wrap`, `flags`) |
    ///
    /// - Returns: Whether `op` was one of these.
    func performPacked(_ op: UInt8, _ reader: inout FuzzInput) -> Bool {
        let ring = addresses.placement.descriptorArea
        switch op % 10 {
        case 2:
            let ringBytes = 16 * size
            let offset = Int(reader.byteOrZero()) % ringBytes
            let bytes = reader.bytes(upTo: Int(reader.byteOrZero()))
            deviceWrite(
                UnsafeRawBufferPointer(rebasing: bytes[0..<min(bytes.count, ringBytes - offset)]),
                at: ring + UInt64(offset)
            )
        case 3:
            let selector = reader.byteOrZero()
            let heads = inFlight.keys.sorted()
            let id: UInt16 =
                selector & 0x80 == 0 && !heads.isEmpty ? heads[Int(selector) % heads.count] : reader.uint16()
            let lengthSelector = reader.byteOrZero()
            let mode = reader.byteOrZero()
            let writable = inFlight[id]?.writableByteCount ?? 0
            let length: UInt32 =
                switch lengthSelector >> 6 {
                case 0: UInt32(writable)
                case 1: UInt32(Int(lengthSelector & 0x3F) % (writable + 1))
                case 2: UInt32(writable + 1 + Int(lengthSelector & 0x3F))
                default: UInt32.max - UInt32(lengthSelector & 0x3F)
                }
            // AVAIL and USED: used for the position's wrap counter, used with the other one,
            // available (the driver's form), or the inverse pair; WRITE unless bit 2.
            let wrap = devicePosition.wrap
            let pairs: [(avail: Bool, used: Bool)] = [(wrap, wrap), (!wrap, !wrap), (wrap, !wrap), (!wrap, wrap)]
            let pair = pairs[Int(mode & 3)]
            let flags = (pair.avail ? 0x80 : 0) | (pair.used ? 0x8000 : 0) | (mode & 4 == 0 ? 2 : 0) as UInt16
            let descriptor = ring + UInt64(16 * devicePosition.index)
            deviceWrite(length, at: descriptor + 8)
            deviceWrite(id, at: descriptor + 12)
            deviceWrite(flags, at: descriptor + 14)
            devicePosition.advance(by: inFlight[id]?.descriptorCount ?? 1, size: size)
        case 4:
            let step = reader.byteOrZero()
            if step & 0x80 != 0 {
                devicePosition = usedPosition
            } else {
                devicePosition.advance(by: Int(step) % (size + 2), size: size)
            }
        case 9:
            let event = addresses.placement.deviceArea
            deviceWrite(reader.uint16(), at: event)
            let mode = reader.byteOrZero()
            deviceWrite(mode & 0x80 != 0 ? UInt16(mode) << 8 | UInt16(mode) : UInt16(mode & 3), at: event + 2)
        default:
            return false
        }
        return true
    }

    /// Parses the list the driver just made available at its position as the device would, with
    /// the reference parser: one list of the chain's descriptor count carrying its buffer ID, the
    /// segments it was built from, in usable pool slots.
    func checkPublishedPacked(head: UInt16, _ model: Submitted) throws(InvariantFailure) {
        let outcome = reference.parsePacked(
            index: availablePosition.index,
            wrap: availablePosition.wrap,
            held: [Bool](repeating: false, count: size)
        )
        guard case .list(let id, let count, .valid(let segments)) = outcome, id == head,
            count == model.descriptorCount
        else {
            throw InvariantFailure(
                "the list published at \(availablePosition) for buffer \(head) (\(model.descriptorCount) descriptors) is \(outcome)"
            )
        }
        try checkPublished(head: head, segments: segments, model)
        availablePosition.advance(by: count, size: size)
        movesSinceNotifyCheck += count
    }

    /// `takeUsed()` on the packed ring: the outcome predicted from the descriptor at the driver's
    /// used position (trust-model "The packed ring", driver side).
    func takePacked(keep: Bool) throws(InvariantFailure) -> Bool {
        let descriptor = addresses.descriptor(usedPosition.index)
        let flags = load16(descriptor + 14)
        let id = load16(descriptor + 12)
        let length = memory.load32(descriptor + 8)
        let wrap = usedPosition.wrap
        let avail = flags & 0x80 != 0
        let used = flags & 0x8000 != 0
        let isUsed = avail == wrap && used == wrap
        let written = flags & 2 != 0 ? length : 0
        var expectedCode: VirtqueueError.Code?
        if broken {
            expectedCode = .queueBroken
        } else if isUsed {
            if inFlight.isEmpty {
                expectedCode = .usedIndexJump
            } else if Int(id) >= size {
                expectedCode = .usedIDOutOfRange
            } else if let model = inFlight[id] {
                if Int(written) > model.writableByteCount { expectedCode = .usedLengthTooLarge }
            } else {
                expectedCode = .usedIDNotInFlight
            }
        } else if !inFlight.isEmpty && !(avail == wrap && used != wrap) {
            expectedCode = .wrapCounterMismatch
        }
        let taken: UsedChain?
        do {
            taken = try queue.takeUsed()
        } catch {
            try check(
                error.code == expectedCode,
                "takeUsed at \(usedPosition) (flags 0x\(String(flags, radix: 16)), id \(id), len \(length)) reported \(error), expected \(String(describing: expectedCode))"
            )
            try check(queue.isBroken, "the queue is not broken after \(error)")
            if !broken { try check(error.isPeerViolation, "\(error) is not a peer violation") }
            broken = true
            return false
        }
        try check(
            expectedCode == nil,
            "takeUsed at \(usedPosition) (flags 0x\(String(flags, radix: 16)), id \(id), len \(length)) succeeded where \(String(describing: expectedCode)) was expected"
        )
        guard let taken else {
            try check(!isUsed, "takeUsed returned nil with a used descriptor at \(usedPosition)")
            return false
        }
        try check(isUsed, "takeUsed returned a chain with no used descriptor at \(usedPosition)")
        try check(taken.status == .completed, "a used chain has status \(taken.status)")
        try check(taken.id == id, "takeUsed returned id \(taken.id), the descriptor says \(id)")
        try check(taken.writtenByteCount == Int(written), "written \(taken.writtenByteCount) != \(written)")
        guard let model = inFlight.removeValue(forKey: taken.id) else {
            throw InvariantFailure("takeUsed returned chain \(taken.id), which is not in flight")
        }
        usedPosition.advance(by: model.descriptorCount, size: size)
        try checkReturned(taken, model)
        try keepOrFree(taken, model, keep: keep)
        return true
    }
}
