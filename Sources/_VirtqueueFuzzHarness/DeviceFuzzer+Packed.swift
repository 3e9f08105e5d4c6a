import Virtqueue

/// The packed ring's operations of ``DeviceFuzzer``: the hostile driver's writes into one
/// descriptor ring (wire-format §12.1–12.4) and its event-suppression structure.
extension DeviceSession {
    /// Plays op `op` on the packed ring, when it is one that differs from the split ring's:
    ///
    /// | op % 10 | operation |
    /// |---|---|
    /// | 1 | make a list of 1–4 descriptors (or one INDIRECT descriptor and its table) available at the harness's driver position, with a chosen or raw buffer ID |
    /// | 2 | move the harness's driver position on by 0…N+1, or back to the device's position |
    /// | 7 | write one descriptor `{addr, len, id, flags}` with raw flags, AVAIL and USED bits into the ring or an indirect table |
    /// | 8 | write one descriptor's `flags`: any of NEXT, WRITE, INDIRECT, AVAIL and USED |
    /// | 9 | write the driver's event-suppression structure (`off_wrap`, `flags`) |
    ///
    /// - Returns: Whether `op` was one of these.
    func performPacked(_ op: UInt8, _ reader: inout FuzzInput) -> Bool {
        let ring = addresses.placement.descriptorArea
        switch op % 10 {
        case 1:
            let shape = reader.byteOrZero()
            let idByte = reader.byteOrZero()
            let count = 1 + Int(shape & 3)
            let indirect = shape & 4 != 0
            let firstWritable = Int(shape >> 3) & 7
            let id = idByte & 0x80 != 0 ? UInt16(idByte & 0x7F) : freeID(after: Int(idByte))
            // The 1–4 buffers, as packed descriptors (`id` 0, NEXT not yet set), in a table of
            // 64 bytes on the stack: the table an INDIRECT descriptor points at, or the list.
            var table = PackedTable()
            withUnsafeMutableBytes(of: &table) { raw in
                for index in 0..<count {
                    let offset = Int(reader.uint16()) % bufferSpaceSize
                    PackedDescriptor(
                        address: bufferSpace[0].lowerBound + UInt64(offset),
                        length: UInt32(reader.byteOrZero()),
                        id: 0,
                        flags: index >= firstWritable ? 2 : 0
                    ).store(to: raw.baseAddress! + 16 * index)
                }
            }
            var listCount = count
            if indirect {
                // The table, in the packed format, in the buffer space; one ring descriptor.
                let offset = (Int(shape >> 5) * 48) % max(bufferSpaceSize - 16 * count, 1)
                withUnsafeBytes(of: &table) { raw in
                    write(space: bufferSpace, offset: offset, UnsafeRawBufferPointer(rebasing: raw[0..<16 * count]))
                }
                let tableAddress = bufferSpace[0].lowerBound + UInt64(offset)
                withUnsafeMutableBytes(of: &table) { raw in
                    PackedDescriptor(
                        address: tableAddress,
                        length: UInt32(16 * count),
                        id: 0,
                        flags: PackedRingFields.indirectFlag
                    ).store(to: raw.baseAddress!)
                }
                listCount = 1
            }
            // The first descriptor's flags go last (one thread here: the order is the spec's).
            let first = driverPosition
            var flagsFirst: UInt16 = 0
            for index in 0..<listCount {
                var element = withUnsafeBytes(of: &table) {
                    PackedDescriptor(loadingFrom: $0.baseAddress! + 16 * index)
                }
                let next: UInt16 = !indirect && index + 1 < count ? 1 : 0
                let flags = element.flags | next | (driverPosition.wrap ? 0x80 : 0x8000)
                element = PackedDescriptor(address: element.address, length: element.length, id: id, flags: flags)
                var bytes = (UInt64(0), UInt64(0))
                withUnsafeMutableBytes(of: &bytes) { raw in
                    element.store(to: raw.baseAddress!)
                    if index == 0 {
                        flagsFirst = flags
                        raw[14] = first.wrap ? 0 : 0x80  // last lap's (used) until the end
                        raw[15] = first.wrap ? 0 : 0x80
                    }
                    write(UnsafeRawBufferPointer(raw), at: ring + UInt64(16 * driverPosition.index))
                }
                driverPosition.advance(by: 1, size: size)
            }
            write16(flagsFirst, at: ring + UInt64(16 * first.index) + 14)
        case 2:
            driverPosition.move(reader.byteOrZero(), orBackTo: position, size: size)
        case 7:
            let target = reader.byteOrZero()
            let address = bufferSpace[0].lowerBound &+ UInt64(reader.uint16()) &- 64
            let length = UInt32(reader.uint16())
            let low = reader.byteOrZero()
            let high = reader.byteOrZero()
            // Low byte: NEXT, WRITE, INDIRECT, reserved bits and AVAIL (bit 7); the high byte's
            // bit 7 is USED, its other bits the buffer ID.
            let flags = UInt16(low) | (high & 0x80 != 0 ? 0x8000 : 0)
            let descriptor = PackedDescriptor(address: address, length: length, id: UInt16(high & 0x7F), flags: flags)
            var bytes = (UInt64(0), UInt64(0))
            withUnsafeMutableBytes(of: &bytes) { raw in
                descriptor.store(to: raw.baseAddress!)
                if target & 0x80 != 0 {
                    let offset = (Int(target & 0x7F) * 16) % (bufferSpaceSize - 15)
                    write(space: bufferSpace, offset: offset, UnsafeRawBufferPointer(raw))
                } else {
                    write(UnsafeRawBufferPointer(raw), at: ring + UInt64(16 * (Int(target) % size)))
                }
            }
        case 8:
            let slot = Int(reader.byteOrZero()) % size
            let value = reader.byteOrZero()
            let flags = UInt16(value & 7) | (value & 8 != 0 ? 0x80 : 0) | (value & 16 != 0 ? 0x8000 : 0)
            write16(flags, at: ring + UInt64(16 * slot) + 14)
        case 9:
            let (offWrap, flags) = hostileEventSuppression(&reader)
            write16(offWrap, at: addresses.placement.driverArea)
            write16(flags, at: addresses.placement.driverArea + 2)
        default:
            return false
        }
        return true
    }

    /// The model of a completion under IN_ORDER (docs/wire-format.md §12.6): held until every
    /// buffer taken before it is used; then it and the held ones after it are used in the order
    /// taken, each at the used position — or, while the last one used in this call was written
    /// completely, folded into that one's used descriptor (its `len`, `id` and `WRITE`
    /// rewritten) — the used position moving past each buffer's descriptors.
    func useInOrder(serial: Int, length: UInt32, writable: Int) {
        heldCompletions[serial] = (length, Int(length) == writable)
        var run: PackedPosition?
        var lastCompletely = false
        while let (first, id, listLength) = takenOrder.first,
            let completion = heldCompletions.removeValue(forKey: first)
        {
            takenOrder.removeFirst()
            if run == nil || !lastCompletely { run = usedPosition }
            let at = run ?? usedPosition
            let descriptor = addresses.descriptor(at.index)
            setShadow(completion.length, at: descriptor + 8)
            setShadow(id, at: descriptor + 12)
            setShadow((at.wrap ? 0x8080 : 0) | (completion.length > 0 ? 2 : 0) as UInt16, at: descriptor + 14)
            usedPosition.advance(by: listLength, size: size)
            movesSinceNotifyCheck += listLength
            lastCompletely = completion.completely
        }
    }

    /// The first buffer ID from `start` (modulo N) that the device does not hold.
    func freeID(after start: Int) -> UInt16 {
        for step in 0..<size where !heldHeads[(start + step) % size] {
            return UInt16((start + step) % size)
        }
        return UInt16(start % size)
    }

    /// After `waitForRequests` on the packed ring: the device asked to be notified in its own
    /// structure — `DESC` with its position under EVENT_IDX, else `ENABLE` — and may have
    /// written `DISABLE` once awake; a request ready means success, none a dead peer.
    func checkPackedWait(ready: Bool, thrown: VirtqueueError?) throws(InvariantFailure) {
        let event = addresses.placement.deviceArea
        let offWrap = load16(event)
        let flags = load16(event + 2)
        let asked: (UInt16, UInt16) = eventIndex ? (position.cursorValue, 2) : (0, 0)
        try check(
            flags == 1 || (offWrap, flags) == asked,
            "the device's event suppression after a wait is 0x\(String(offWrap, radix: 16)) / \(flags), expected \(asked) or DISABLE"
        )
        setShadow(offWrap, at: event)
        setShadow(flags, at: event + 2)
        if ready {
            try check(thrown == nil, "waiting with a request ready failed: \(String(describing: thrown))")
        } else {
            try check(thrown?.code == .peerDied, "a wait with no peer reported \(String(describing: thrown))")
            try check(queue.isBroken, "the queue is not broken after its peer died")
            broken = true
        }
    }
}

/// Four packed descriptors, 64 bytes, on the stack: a list or an indirect table being written.
struct PackedTable {
    var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
}
