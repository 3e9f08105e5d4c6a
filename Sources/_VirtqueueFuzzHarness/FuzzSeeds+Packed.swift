import Virtqueue

extension FuzzSeeds {
    /// Seeds for ``DeviceFuzzer`` on the packed ring (`FuzzDevicePacked`): every queue size and
    /// feature set, from a fresh cursor and from resumed ones of either wrap counter, lists made
    /// available, taken, completed and notified round the ring for two laps and more (direct and,
    /// with INDIRECT_DESC, indirect); then one seed per packed trust rule, built with the
    /// descriptor- and flags-writing operations.
    public static func devicePacked() -> [Seed] {
        var seeds: [Seed] = []
        // Op 1: make a list available — shape (count − 1, INDIRECT in bit 2, the first writable
        // element in bits 3–5), buffer ID, then per element an offset (u16) and a length.
        func list(_ shape: UInt8, _ id: UInt8, _ elements: [(offset: UInt16, length: UInt8)]) -> [UInt8] {
            [1, shape, id] + elements.flatMap { [UInt8($0.offset & 0xFF), UInt8($0.offset >> 8), $0.length] }
        }
        let serve: [UInt8] = [3, 0, 4, 0, 0, 5]
        for (sizeBits, size) in [(0, 3), (1, 5), (2, 13), (3, 1)] {
            for featureBits: UInt8 in [0, 4, 8, 12] {
                for cursor: UInt8 in [0x80, 0x01, 0x82] {
                    let config = UInt8(sizeBits) | featureBits | 2 << 4 | 2 << 6
                    var program: [UInt8] = [config, cursor]
                    for lap in 0..<(2 * size + 3) {
                        let count = min(lap % 3 + 1, size)
                        let indirect = featureBits & 4 != 0 && lap % 2 == 1
                        let shape = UInt8(indirect ? 4 | 2 : count - 1) | 1 << 3 | UInt8(lap % 4) << 5
                        let elements = (0..<(indirect ? 3 : count)).map { (UInt16(64 + 96 * $0 + 8 * lap), UInt8(40)) }
                        program += list(shape, UInt8(lap), elements) + serve
                        if lap % 3 == 2 { program += [4, 1, 0x50, 5] }
                    }
                    // DESC at the device's next used position, a wait with a request ready, one without.
                    program += [9, 0x01, 0x80, 2, 6, 1] + list(0, 1, [(128, 16)]) + [6, 1, 3, 0, 6, 0]
                    seeds.append(("ring-n\(size)-f\(featureBits)-c\(cursor)", program))
                }
            }
        }
        // IN_ORDER (the `O` marker): lists of one writable element, up to three taken at once
        // and completed in a scrambled order, fully or in part, round the ring for two laps and
        // more — early completions held, runs folded into one used descriptor.
        for (sizeBits, size) in [(0, 3), (1, 5), (2, 13), (3, 1)] {
            for featureBits: UInt8 in [0, 8] {
                for cursor: UInt8 in [0x80, 0x82] {
                    let config = UInt8(sizeBits) | featureBits | 2 << 4 | 2 << 6
                    var program: [UInt8] = [DeviceFuzzer.inOrderMarker, config, cursor]
                    let count = min(3, size)
                    for lap in 0..<(2 * size + 3) {
                        for index in 0..<count {
                            program += list(0, UInt8(index), [(UInt16(64 + 96 * index + 8 * lap), 40)])
                        }
                        program += [3, UInt8(count - 1)]
                        // Last first, then one in part (5 bytes) or whole by lap, then the rest.
                        program += [4, 2, 0, 4, 0, lap % 2 == 0 ? 0x45 : 0, 4, 0, 0, 5]
                    }
                    program += [9, 0x01, 0x80, 2, 6, 1] + list(0, 1, [(128, 16)]) + [6, 1, 3, 0, 6, 0]
                    seeds.append(("in-order-n\(size)-f\(featureBits)-c\(cursor)", program))
                }
            }
        }
        // Op 7: one descriptor at ring slot `target` (or, with bit 7, an indirect table entry):
        // address from the buffer space's start + 64 (u16), length (u16), flags' low byte
        // (AVAIL is 0x80), and a byte with USED in bit 7 and the buffer ID.
        func descriptor(_ target: UInt8, _ address: UInt16, _ length: UInt16, _ low: UInt8, _ high: UInt8) -> [UInt8] {
            [
                7, target, UInt8(address & 0xFF), UInt8(address >> 8), UInt8(length & 0xFF), UInt8(length >> 8), low,
                high,
            ]
        }
        let config = UInt8(1 | 4 | 2 << 4 | 2 << 6)  // N = 5, INDIRECT_DESC
        let start: [UInt8] = [config, 0x80]
        let take: [UInt8] = [3, 1, 4, 0, 0, 5]
        let malformed: [(String, [UInt8])] = [
            ("used-flags-at-position", descriptor(0, 64, 16, 0x80, 0x80)),
            ("list-without-end", descriptor(0, 64, 16, 0x81, 0) + descriptor(1, 80, 16, 0x00, 0x81)),
            ("list-into-last-lap", descriptor(4, 64, 16, 0x81, 0) + [2, 4] + descriptor(0, 80, 16, 0x80, 0)),
            ("list-longer-than-queue", (0..<5).flatMap { descriptor(UInt8($0), 64, 16, 0x81, 0) }),
            ("id-out-of-range", list(0x80, 0xFF, [(64, 16)])),
            ("id-made-available-twice", list(0, 0x82, [(64, 16)]) + [3, 0] + list(0, 0x82, [(80, 16)])),
            ("readable-after-writable", descriptor(0, 64, 8, 0x83, 0) + descriptor(1, 80, 8, 0x80, 1)),
            ("outside", descriptor(0, 3000, 16, 0x80, 0)),
            (
                "indirect",
                descriptor(0x80, 100, 8, 0, 0) + descriptor(0x81, 116, 8, 2, 0) + descriptor(0, 64, 32, 0x84, 0)
            ),
            ("indirect-with-next", descriptor(0, 64, 16, 0x85, 0) + descriptor(1, 80, 16, 0x80, 0)),
            ("indirect-inside-list", descriptor(0, 80, 16, 0x81, 0) + descriptor(1, 64, 16, 0x84, 0)),
            ("indirect-zero-length", descriptor(0, 64, 0, 0x84, 0)),
            ("indirect-length-not-16", descriptor(0, 64, 24, 0x84, 0)),
            ("indirect-too-long", descriptor(0, 64, 96, 0x84, 0)),
            ("nested-indirect", descriptor(0x80, 64, 16, 4, 0) + descriptor(0, 64, 16, 0x84, 0)),
            ("flags-rewritten", list(0, 0, [(64, 16)]) + [8, 0, 0x18] + [3, 0, 8, 1, 0x09, 3, 0]),
        ]
        for (name, body) in malformed {
            seeds.append((name, start + body + take))
        }
        seeds.append(
            ("no-indirect-feature", [UInt8(1 | 2 << 4 | 2 << 6), 0x80] + descriptor(0, 64, 32, 0x84, 0) + take)
        )
        seeds.append(("wait-idle", start + [6, 0, 6, 1, 5]))
        return seeds
    }

    /// Seeds for ``DriverFuzzer`` on the packed ring (`FuzzDriverPacked`): every queue size and
    /// feature set, chains direct and indirect submitted, used by the harness's device in and
    /// out of order with assorted lengths, taken, kept and freed, and notified round the ring for
    /// several laps; then one seed per packed trust rule of the driver side.
    public static func driverPacked() -> [Seed] {
        var seeds: [Seed] = []
        // Op 0: submit — shape (readable count, writable count << 2), then one length byte each.
        // Op 3: a used descriptor — chain selector, length selector, AVAIL / USED mode.
        for (sizeBits, size) in [(0, 3), (1, 5), (2, 13), (3, 1)] {
            for featureBits: UInt8 in [0, 4, 8, 12] {
                let config = UInt8(sizeBits) | featureBits | 2 << 4 | 1 << 6  // 64-byte buffers, threshold 2
                var program: [UInt8] = [config, UInt8(4 * size + 1)]
                for lap in 0..<(2 * size + 3) {
                    let readable = UInt8(lap % 2 + (size > 1 ? 1 : 0))
                    let writable = UInt8(size > 2 ? 1 : 0)
                    program +=
                        [0, readable | writable << 2]
                        + Array(repeating: UInt8(20 + lap), count: Int(readable + writable))
                    if lap % 3 == 1 {
                        // Two in flight, used out of order.
                        program += [0, 1, 8, 3, 1, 0, 0, 3, 0, 0x41, 0, 5, 0x05, 7]
                    } else {
                        program += [3, 0, 0, 0, 5, 0x04, 6, 0, 7]
                    }
                }
                program += [9, 0x01, 0x80, 2, 0, 1, 8, 7, 8, 1]
                seeds.append(("ring-n\(size)-f\(featureBits)", program))
            }
        }
        // IN_ORDER (the `O` marker): up to three chains submitted, one used descriptor naming one
        // of them — a batch from the oldest — at the device's position, then taken back, laps
        // round the ring; with a used length in part or whole by lap.
        for (sizeBits, size) in [(0, 3), (1, 5), (2, 13), (3, 1)] {
            for featureBits: UInt8 in [0, 4, 8] {
                let config = UInt8(sizeBits) | featureBits | 2 << 4 | 1 << 6
                var program: [UInt8] = [DriverFuzzer.inOrderMarker, config, UInt8(4 * size + 1)]
                for lap in 0..<(2 * size + 3) {
                    for chain in 0..<min(3, size) {
                        let readable = UInt8(size > 3 ? chain % 2 : 0)
                        program += [0, readable | 1 << 2] + Array(repeating: UInt8(20 + lap), count: Int(readable + 1))
                    }
                    program += [3, UInt8(lap % 3), lap % 2 == 0 ? 0 : 0x43, 0, 5, 3, 7]
                }
                program += [3, 0, 0, 0, 5, 3, 8, 1]
                seeds.append(("in-order-n\(size)-f\(featureBits)", program))
            }
        }
        let config = UInt8(1 | 4 | 2 << 4 | 1 << 6)  // N = 5, INDIRECT_DESC
        let start: [UInt8] = [config, 21, 0, 5, 16, 32]  // one chain: 1 readable, 1 writable
        let take: [UInt8] = [5, 0, 7]
        let malformed: [(String, [UInt8])] = [
            ("wrap-bits-disagree", [3, 0, 0, 3]),
            ("used-with-last-lap-counter", [3, 0, 0, 1]),
            ("used-past-in-flight", [3, 0, 0, 0, 5, 0, 3, 0, 0, 0]),
            ("id-out-of-range", [3, 0x80, 9, 0, 0, 0]),
            ("id-far-out-of-range", [3, 0x80, 0xFF, 0xFF, 0, 0]),
            ("id-not-in-flight", [3, 0x80, 3, 0, 0, 0]),
            ("id-returned-twice", [0, 1, 8, 3, 0, 0, 0, 4, 0x80, 3, 0, 0, 0]),
            ("length-too-large", [3, 0, 0x85, 0]),
            ("length-on-read-only", [0, 1, 8, 3, 1, 0xC0, 4]),
            ("raw-ring-bytes", [2, 8, 8, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x80, 0x80]),
            ("wait", [8, 1, 3, 0, 0, 0, 8, 0]),
        ]
        for (name, body) in malformed {
            seeds.append((name, start + body + take))
        }
        return seeds
    }
}
