import Virtqueue

/// Fuzz target (c): the shared-memory attach path, which parses a region header written by a
/// peer that may be hostile.
///
/// The whole input is the region. The harness parses it with `RegionLayout(parsing:)` and
/// compares the verdict with an independent check of the header rules (``ReferenceHeader``).
/// A header both accept must describe areas that lie inside the bytes given, after the header,
/// and overlap nowhere; writing it back with `initialize(_:)` and parsing again must give the
/// same layout. Then it does what a peer does after attaching: a device and a driver attach to
/// the region as it is — rings and all — and take, complete and submit a little, inside
/// canaries, so a layout that passed validation but was unsafe to use would show.
public enum HeaderFuzzer {
    /// Runs one input.
    ///
    /// - Throws: ``InvariantFailure`` naming the broken invariant.
    public static func run(_ input: UnsafeRawBufferPointer) throws(InvariantFailure) {
        // A copy, so that reads past the end are caught (by the canaries, or by ASan).
        let region = FuzzRegion(copying: input)
        defer { region.deallocate() }
        let bytes = UnsafeRawBufferPointer(region.bytes)
        let verdict = ReferenceHeader.validate(bytes)
        let layout: RegionLayout
        do {
            layout = try RegionLayout(parsing: bytes)
        } catch {
            try check(error.code == .invalidHeader, "parsing reported \(error), not invalidHeader")
            if case .valid = verdict {
                throw InvariantFailure("a header the reference accepts was refused: \(error)")
            }
            try region.checkCanaries()
            return
        }
        if case .invalid(let why) = verdict {
            throw InvariantFailure("a header the reference refuses (\(why)) was accepted: \(layout)")
        }
        try checkLayout(layout, in: bytes)
        try checkRoundTrip(layout)
        // A bit the queues do not run (``Features/wireOnlyTransport``): attaching must be
        // refused, by name. (IN_ORDER runs on both rings.)
        let refused = layout.features.intersection(.wireOnlyTransport)
        if !refused.isEmpty {
            try checkRefused(region, naming: Features.name(ofBit: refused.rawValue.trailingZeroBitCount))
            try region.checkCanaries()
            return
        }
        for queueIndex in 0..<min(layout.queues.count, 4) {
            try attachDevice(region, queueIndex: queueIndex)
            try attachDriver(region, queueIndex: queueIndex)
        }
        try region.checkCanaries()
    }

    static func checkLayout(_ layout: RegionLayout, in bytes: UnsafeRawBufferPointer) throws(InvariantFailure) {
        try check(layout.regionSize <= bytes.count, "region size \(layout.regionSize) > \(bytes.count) bytes")
        try check(layout.headerByteCount <= layout.regionSize, "header \(layout.headerByteCount) > region")
        try check((1...RegionLayout.maximumQueueCount).contains(layout.queues.count), "\(layout.queues.count) queues")
        try check(
            layout.features.contains(.version1)
                && layout.features.subtracting(
                    Features.implementedTransport.union(.wireOnlyTransport).union(.deviceType)
                )
                .isEmpty,
            "features \(layout.features)"
        )
        try check(
            (layout.format == .packed) == layout.features.contains(.ringPacked),
            "format \(layout.format) with features \(layout.features)"
        )
        var areas: [Range<Int>] = [layout.dataAreaOffset..<layout.dataAreaOffset + layout.dataAreaSize]
        for (index, queue) in layout.queues.enumerated() {
            let powerOfTwo = queue.size & (queue.size - 1) == 0
            try check(
                queue.size > 0 && queue.size <= 32768 && (powerOfTwo || layout.format == .packed),
                "queue size \(queue.size)"
            )
            try check(queue.format == layout.format, "queue \(index) is \(queue.format) in a \(layout.format) region")
            let driverAlignment = layout.format == .packed ? 4 : 2
            try check(
                queue.descriptorTableOffset % 16 == 0 && queue.availableRingOffset % driverAlignment == 0
                    && queue.usedRingOffset % 4 == 0,
                "queue offsets misaligned: \(queue)"
            )
            // The areas' extents from the core's placement (ReferenceHeader states them itself).
            guard let placement = try? layout.placement(ofQueue: index) else {
                throw InvariantFailure("queue \(index) of a valid layout has no placement")
            }
            areas += placement.areas.map { Int($0.range.lowerBound)..<Int($0.range.upperBound) }
        }
        for area in areas {
            try check(
                area.lowerBound >= layout.headerByteCount && area.upperBound <= layout.regionSize,
                "area \(area) is outside \(layout.headerByteCount)..<\(layout.regionSize)"
            )
        }
        let sorted = areas.filter { !$0.isEmpty }.sorted { $0.lowerBound < $1.lowerBound }
        for (first, second) in zip(sorted, sorted.dropFirst()) {
            try check(first.upperBound <= second.lowerBound, "areas \(first) and \(second) overlap")
        }
    }

    static func checkRoundTrip(_ layout: RegionLayout) throws(InvariantFailure) {
        let copy = FuzzRegion(count: layout.regionSize)
        defer { copy.deallocate() }
        do {
            try layout.initialize(copy)
            let reread = try RegionLayout(reading: copy)
            try check(reread == layout, "the layout read back \(reread) differs from \(layout)")
        } catch let error as InvariantFailure {
            throw error
        } catch {
            throw InvariantFailure("writing back and re-reading a valid layout failed: \(error)")
        }
        try copy.checkCanaries()
    }

    /// A region with RING_PACKED has a valid header, but neither queue may attach until the
    /// queues run it: both refuse with featureNotSupported naming the bit (`feature`). (IN_ORDER
    /// alone is run on the split ring.)
    static func checkRefused(_ region: FuzzRegion, naming feature: String) throws(InvariantFailure) {
        try expectRefused("a device", naming: feature) { () throws(VirtqueueError) in
            _ = try DeviceQueue(region: region, notifier: FuzzNotifier(), supportedFeatures: Features(rawValue: ~0))
        }
        try expectRefused("a driver", naming: feature) { () throws(VirtqueueError) in
            _ = try DriverQueue(region: region, notifier: FuzzNotifier(), bufferSize: 16)
        }
    }

    static func expectRefused(
        _ side: String,
        naming feature: String,
        _ attach: () throws(VirtqueueError) -> Void
    ) throws(InvariantFailure) {
        do {
            try attach()
        } catch {
            try check(
                error.code == .featureNotSupported && error.message.contains(feature),
                "\(side) refused a region with \(feature) with \(error)"
            )
            return
        }
        throw InvariantFailure("\(side) attached to a region with \(feature)")
    }

    static func attachDevice(_ region: FuzzRegion, queueIndex: Int) throws(InvariantFailure) {
        var device: DeviceQueue<FuzzRegion, FuzzNotifier>
        do {
            // A device that implements every device-type bit: the rings ignore them.
            device = try DeviceQueue(
                region: region,
                notifier: FuzzNotifier(),
                queueIndex: queueIndex,
                supportedFeatures: Features.all.union(.deviceType)
            )
        } catch {
            throw InvariantFailure("a device could not attach to a valid layout: \(error)")
        }
        for _ in 0..<4 {
            do {
                guard let request = try device.nextRequest() else { break }
                var written = 0
                try device.forEachReadable(in: request) { bytes in written &+= bytes.reduce(0) { $0 &+ Int($1) } }
                try device.forEachWritable(in: request) { bytes in
                    bytes.initializeMemory(as: UInt8.self, repeating: 0x5A)
                }
                let length = written % (request.writableByteCount + 1)
                try device.complete(request, written: length)
                _ = try device.notifyIfNeeded()
            } catch let error as VirtqueueError {
                try check(error.isPeerViolation || error.code == .segmentStoreExhausted, "device reported \(error)")
                if error.isPeerViolation { try check(device.isBroken, "device not broken after \(error)") }
                break
            } catch {
                throw InvariantFailure("device reported \(error)")
            }
        }
        try region.checkCanaries()
    }

    static func attachDriver(_ region: FuzzRegion, queueIndex: Int) throws(InvariantFailure) {
        var driver: DriverQueue<FuzzRegion, FuzzNotifier>
        do {
            driver = try DriverQueue(region: region, notifier: FuzzNotifier(), queueIndex: queueIndex, bufferSize: 16)
        } catch {
            throw InvariantFailure("a driver could not attach to a valid layout: \(error)")
        }
        var chain = driver.makeChain()
        var built = true
        do {
            try driver.appendReadable(to: &chain, copying: [1, 2, 3])
            if driver.queueSize > 1 { try driver.appendWritable(to: &chain) }
        } catch {
            // A pool too small for the chain: whatever it took goes back with discard, below.
            try check(error.code == .poolExhausted, "building one chain reported \(error)")
            built = false
        }
        do {
            if built {
                try driver.submit(chain)
                _ = try driver.notifyIfNeeded()
            } else {
                try driver.discard(chain)
            }
        } catch {
            throw InvariantFailure("submitting or discarding one chain reported \(error)")
        }
        for _ in 0..<4 {
            do {
                guard let used = try driver.takeUsed() else { break }
                try driver.free(used)
            } catch {
                try check(error.isPeerViolation && driver.isBroken, "driver reported \(error)")
                break
            }
        }
        if driver.inFlightCount > 0 {
            driver.markBroken(VirtqueueError(.peerDied, "the fuzz run is over"))
            while let abandoned = driver.takeAbandoned() {
                do {
                    try driver.free(abandoned)
                } catch {
                    throw InvariantFailure("freeing an abandoned chain failed: \(error)")
                }
            }
        }
        try check(driver.freeBufferCount == driver.bufferCount, "the driver lost buffers")
        try region.checkCanaries()
    }
}

/// An independent statement of the header rules of `docs/wire-format.md`, the oracle the
/// real parser is compared with. It checks overlap by sorting rather than pairwise.
enum ReferenceHeader {
    enum Verdict {
        case valid
        case invalid(String)
    }

    static func validate(_ bytes: UnsafeRawBufferPointer) -> Verdict {
        func u16(_ offset: Int) -> UInt64 { UInt64(bytes[offset]) | UInt64(bytes[offset + 1]) << 8 }
        func u32(_ offset: Int) -> UInt64 { u16(offset) | u16(offset + 2) << 16 }
        func u64(_ offset: Int) -> UInt64 { u32(offset) | u32(offset + 4) << 32 }
        guard bytes.count >= 64 else { return .invalid("short") }
        guard u64(0) == 0x0051_5654_4649_5753 else { return .invalid("magic") }
        guard u16(8) == 2 else { return .invalid("version") }
        let queueCount = u16(10)
        guard queueCount >= 1, queueCount <= 64 else { return .invalid("queue count") }
        let header = 64 + 32 * queueCount
        guard u32(12) == header else { return .invalid("header size") }
        guard header <= UInt64(bytes.count) else { return .invalid("header past the end") }
        let features = u64(16)
        // Transport bits 24–41 and reserved bits 42–49: only 28, 29, 32, 34 and 35. Device-type
        // bits (0–23, 50–63) pass through to the device.
        let transportAndReserved: UInt64 = (1 << 50 - 1) & ~(1 << 24 - 1)
        let allowed: UInt64 = 1 << 28 | 1 << 29 | 1 << 32 | 1 << 34 | 1 << 35
        guard features & transportAndReserved & ~allowed == 0, features & (1 << 32) != 0 else {
            return .invalid("features")
        }
        let packed = features & (1 << 34) != 0
        guard u16(0x30) == (packed ? 1 : 0) else { return .invalid("ring format") }
        let regionSize = u64(24)
        guard regionSize <= UInt64(bytes.count), regionSize >= header else { return .invalid("region size") }
        let dataOffset = u64(32)
        let dataSize = u64(40)
        guard dataOffset <= regionSize, dataSize <= regionSize, dataOffset + dataSize <= regionSize else {
            return .invalid("data area bounds")
        }
        guard dataOffset % 16 == 0, dataOffset >= header else { return .invalid("data area placement") }
        var areas: [(UInt64, UInt64)] = [(dataOffset, dataOffset + dataSize)]
        for queue in 0..<Int(queueCount) {
            let entry = 64 + 32 * queue
            let size = u16(entry)
            guard size >= 1, size <= 32768, packed || size & (size - 1) == 0 else { return .invalid("queue size") }
            // Split: descriptor table, available ring, used ring; packed: descriptor ring and
            // the two 4-byte event-suppression structures.
            let driverPart: (alignment: UInt64, length: UInt64) = packed ? (4, 4) : (2, 6 + 2 * size)
            let devicePart: (alignment: UInt64, length: UInt64) = packed ? (4, 4) : (4, 6 + 8 * size)
            let parts: [(offset: UInt64, alignment: UInt64, length: UInt64)] = [
                (u64(entry + 8), 16, 16 * size),
                (u64(entry + 16), driverPart.alignment, driverPart.length),
                (u64(entry + 24), devicePart.alignment, devicePart.length),
            ]
            for part in parts {
                guard part.offset <= regionSize, part.offset % part.alignment == 0 else {
                    return .invalid("queue offset")
                }
                guard part.offset >= header, part.offset + part.length <= regionSize else {
                    return .invalid("queue area bounds")
                }
                areas.append((part.offset, part.offset + part.length))
            }
        }
        let sorted = areas.filter { $0.0 < $0.1 }.sorted { $0.0 < $1.0 }
        for (first, second) in zip(sorted, sorted.dropFirst()) where first.1 > second.0 {
            return .invalid("overlap")
        }
        return .valid
    }
}
