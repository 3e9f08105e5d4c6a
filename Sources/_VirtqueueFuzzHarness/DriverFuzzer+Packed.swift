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
            let length = Self.usedLength(lengthSelector, writable: inFlight[id]?.writableByteCount ?? 0)
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
            devicePosition.advance(by: deviceSkip(naming: id), size: size)
        case 4:
            devicePosition.move(reader.byteOrZero(), orBackTo: usedPosition, size: size)
        case 9:
            let (offWrap, flags) = hostileEventSuppression(&reader)
            deviceWrite(offWrap, at: addresses.placement.deviceArea)
            deviceWrite(flags, at: addresses.placement.deviceArea + 2)
        default:
            return false
        }
        return true
    }

    /// Parses the list the driver just made available at its position as the device would, with
    /// the reference parser: one list of the chain's descriptor count carrying its buffer ID, the
    /// segments it was built from, in usable pool slots, over no descriptor the driver still has
    /// in flight (from its used position on).
    func checkPublishedPacked(head: UInt16, _ model: Submitted) throws(InvariantFailure) {
        let outcome = reference.parsePacked(
            index: availablePosition.index,
            wrap: availablePosition.wrap,
            held: noneHeld,
            room: size - availablePosition.steps(after: usedPosition, size: size)
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

    /// How far the harness's device moves on after a used descriptor naming `id`: that chain's
    /// descriptor count — or, under IN_ORDER, the batch's, from the chain whose first descriptor
    /// is at the device's position (buffer IDs are ring indices) through the named one, as long
    /// as each is in flight.
    func deviceSkip(naming id: UInt16) -> Int {
        guard inOrder else { return inFlight[id]?.descriptorCount ?? 1 }
        var skipped = 0
        var index = devicePosition.index
        for _ in 0..<inFlight.count {
            guard let model = inFlight[UInt16(index)] else { break }
            skipped += model.descriptorCount
            if index == Int(id) { return skipped }
            index = (index + model.descriptorCount) % size
        }
        return inFlight[id]?.descriptorCount ?? 1
    }

    /// What `takeUsed()` must do on the packed ring, predicted from the descriptor at the
    /// driver's used position (trust-model "The packed ring", driver side) — under IN_ORDER,
    /// the next chain of the batch being taken back, or the batch the descriptor starts: the
    /// chains in flight from the oldest through the named one, all but the last used completely.
    func predictPacked() -> TakePrediction {
        if inOrder, !broken, let next = pendingBatch.first {
            return TakePrediction(
                code: nil,
                ready: true,
                id: UInt32(next.id),
                written: next.written,
                context: .inBatch(pendingBatch, at: usedPosition)
            )
        }
        let descriptor = addresses.descriptor(usedPosition.index)
        let flags = load16(descriptor + 14)
        let id = load16(descriptor + 12)
        let length = memory.load32(descriptor + 8)
        let wrap = usedPosition.wrap
        let avail = flags & 0x80 != 0
        let used = flags & 0x8000 != 0
        let isUsed = avail == wrap && used == wrap
        // Without WRITE, `len` is reserved: the device wrote nothing.
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
            // Neither used nor the driver's own available descriptor: in no legal ring.
            expectedCode = .wrapCounterMismatch
        }
        if inOrder, expectedCode == nil, isUsed, let last = submissionOrder.firstIndex(of: id) {
            pendingBatch = submissionOrder[...last].map { chain in
                (chain, chain == id ? Int(written) : inFlight[chain]?.writableByteCount ?? 0)
            }
            return TakePrediction(
                code: nil,
                ready: true,
                id: UInt32(submissionOrder[0]),
                written: pendingBatch[0].written,
                context: .batch(at: usedPosition, id: id, length: length, batch: pendingBatch)
            )
        }
        return TakePrediction(
            code: expectedCode,
            ready: isUsed,
            id: UInt32(id),
            written: Int(written),
            context: .packed(at: usedPosition, flags: flags, id: id, length: length)
        )
    }
}
