/// One window of an ``AddressMap``: bus addresses `start ..< start + size` are the bytes at `host`.
@usableFromInline
internal struct AddressWindow {
    @usableFromInline var start: UInt64
    @usableFromInline var size: UInt64
    @usableFromInline var host: UnsafeMutableRawPointer

    @inlinable
    init(start: UInt64, size: UInt64, host: UnsafeMutableRawPointer) {
        self.start = start
        self.size = size
        self.host = host
    }

    var range: Range<UInt64> { start..<start &+ size }
    var end: UInt64 { start &+ size }
}

/// A memory's mappings, copied once into private memory, sorted and validated: the translation
/// table every bus address of a queue goes through.
///
/// The largest window is also kept inline as ``hot``: for this package's own regions (one
/// mapping) it is the only one, and the hot path is one subtraction and two comparisons, as it
/// was before memory had more than one mapping. Any other address goes to the out-of-line search.
@usableFromInline
internal struct AddressMap {
    @usableFromInline let hot: AddressWindow
    /// All windows, sorted by `start`, not overlapping (`hot` among them).
    @usableFromInline let windows: UnsafeMutablePointer<AddressWindow>
    @usableFromInline let count: Int
    /// The buffer area the mappings were clipped to, if any.
    let clip: Range<UInt64>?

    /// Copies and validates `mappings`, keeping only the bytes inside `clip` when given.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/invalidConfiguration`` naming a mapping that is
    ///   empty, runs past 2^64 or overlaps another, or when nothing is left.
    init(_ mappings: UnsafeBufferPointer<GuestMapping>, clippedTo clip: Range<UInt64>? = nil) throws(VirtqueueError) {
        var list: [AddressWindow] = []
        for mapping in mappings {
            guard let base = mapping.bytes.baseAddress, mapping.bytes.count > 0 else {
                throw VirtqueueError(
                    .invalidConfiguration,
                    "mapping at bus address \(hex(mapping.busAddress)) is empty"
                )
            }
            let size = UInt64(mapping.bytes.count)
            guard mapping.busAddress <= UInt64.max - size else {
                throw VirtqueueError(
                    .invalidConfiguration,
                    "mapping at bus address \(hex(mapping.busAddress)) of \(size) bytes runs past 2^64"
                )
            }
            var window = AddressWindow(start: mapping.busAddress, size: size, host: base)
            if let clip {
                let low = max(window.start, clip.lowerBound)
                let high = min(window.end, clip.upperBound)
                guard low < high else { continue }
                window = AddressWindow(start: low, size: high - low, host: base + Int(low - mapping.busAddress))
            }
            list.append(window)
        }
        if list.isEmpty, let clip {
            // An empty buffer area (a region with no data area): one empty window at its start,
            // where only a zero-length buffer fits.
            if let mapping = mappings.first(where: {
                $0.busAddress <= clip.lowerBound && clip.lowerBound - $0.busAddress <= UInt64($0.bytes.count)
            }), let base = mapping.bytes.baseAddress {
                list.append(
                    AddressWindow(
                        start: clip.lowerBound,
                        size: 0,
                        host: base + Int(clip.lowerBound - mapping.busAddress)
                    )
                )
            }
        }
        list.sort { $0.start < $1.start }
        for index in list.indices.dropFirst() where list[index].start < list[index - 1].end {
            throw VirtqueueError(
                .invalidConfiguration,
                "mapping \(hexRange(list[index].range)) overlaps mapping \(hexRange(list[index - 1].range))"
            )
        }
        guard let largest = list.max(by: { $0.size < $1.size }) else {
            let what = clip.map { " inside \(hexRange($0))" } ?? ""
            throw VirtqueueError(.invalidConfiguration, "the memory has no mapped bytes\(what)")
        }
        hot = largest
        count = list.count
        self.clip = clip
        windows = .allocate(capacity: list.count)
        windows.initialize(from: list, count: list.count)
    }

    func deallocate() {
        windows.deallocate()
    }

    /// The host address of `[address, address + length)` when it lies inside the hot window;
    /// `nil` otherwise (the caller then asks ``segments(address:length:_:)``).
    @inlinable @inline(__always)
    func hotHost(_ address: UInt64, length: UInt32) -> UnsafeMutableRawPointer? {
        let offset = address &- hot.start
        guard offset <= hot.size, UInt64(length) <= hot.size &- offset else { return nil }
        return hot.host + Int(truncatingIfNeeded: offset)
    }

    /// The host address of `[address, address + length)` when it lies inside one window.
    func contiguousHost(_ address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        guard let index = window(containing: address), length <= windows[index].end - address else { return nil }
        return windows[index].host + Int(address - windows[index].start)
    }

    /// The index of the window holding `address`, or `nil` when it is in a gap.
    func window(containing address: UInt64) -> Int? {
        var low = 0
        var high = count
        while low < high {
            let middle = (low + high) / 2
            if windows[middle].end <= address {
                low = middle + 1
            } else {
                high = middle
            }
        }
        guard low < count, windows[low].start <= address else { return nil }
        return low
    }

    /// Why `[address, address + length)` cannot be translated, for an error message; `nil` when
    /// it can (as one or more segments over adjacent windows).
    func problem(address: UInt64, length: UInt64) -> String? {
        guard length <= UInt64.max - address else { return "it overflows 2^64" }
        if let clip, !(address >= clip.lowerBound && address <= clip.upperBound && length <= clip.upperBound - address)
        {
            return "it lies outside the buffer area \(hexRange(clip))"
        }
        guard length > 0 else {
            // An empty buffer needs only its address to be mapped (or at a window's end).
            if window(containing: address) != nil { return nil }
            if (0..<count).contains(where: { windows[$0].end == address }) { return nil }
            return "it lies in a gap between mappings (\(describeWindows()))"
        }
        guard var index = window(containing: address) else {
            return "it lies in a gap between mappings (\(describeWindows()))"
        }
        let end = address + length
        while windows[index].end < end {
            let next = index + 1
            guard next < count, windows[next].start == windows[index].end else {
                return "it runs past the end of mapping \(hexRange(windows[index].range))"
            }
            index = next
        }
        return nil
    }

    /// Calls `body` with each piece of `[address, address + length)`, one per window it crosses
    /// (adjacent windows only). The caller checked ``problem(address:length:)`` is `nil`.
    func segments(
        address: UInt64,
        length: UInt64,
        _ body: (UnsafeMutableRawPointer, UInt32) throws(VirtqueueError) -> Void
    ) throws(VirtqueueError) {
        guard length > 0 else {
            if let index = window(containing: address) {
                try body(windows[index].host + Int(address - windows[index].start), 0)
            } else if let index = (0..<count).first(where: { windows[$0].end == address }) {
                try body(windows[index].host + Int(windows[index].size), 0)
            }
            return
        }
        var cursor = address
        var remaining = length
        guard var index = window(containing: address) else { return }
        while remaining > 0 {
            let window = windows[index]
            let piece = min(remaining, window.end - cursor)
            try body(window.host + Int(cursor - window.start), UInt32(truncatingIfNeeded: piece))
            cursor += piece
            remaining -= piece
            index += 1
            guard index < count || remaining == 0 else { return }
        }
    }

    /// The bytes of `[address, address + count)`, which must lie inside one window.
    ///
    /// - Throws: ``VirtqueueError/Code-swift.struct/addressOutOfRange`` naming `what` and the address.
    func contiguous(address: UInt64, count byteCount: Int, what: String) throws(VirtqueueError)
        -> UnsafeMutableRawBufferPointer
    {
        let length = UInt64(max(byteCount, 0))
        let fail = { (why: String) in
            VirtqueueError(
                .addressOutOfRange,
                "\(what) at bus address \(hex(address)) of \(byteCount) bytes: \(why)"
            )
        }
        guard byteCount >= 0 else { throw fail("the length is negative") }
        guard length <= UInt64.max - address else { throw fail("it overflows 2^64") }
        guard let index = window(containing: address) else {
            throw fail("it lies in a gap between mappings (\(describeWindows()))")
        }
        let window = windows[index]
        guard address + length <= window.end else {
            throw fail("it runs past the end of mapping \(hexRange(window.range))")
        }
        return UnsafeMutableRawBufferPointer(start: window.host + Int(address - window.start), count: byteCount)
    }

    func describeWindows() -> String {
        let shown = (0..<min(count, 8)).map { hexRange(windows[$0].range) }
        return (count > 8 ? shown + ["… \(count) in all"] : shown).joined(separator: ", ")
    }
}

@usableFromInline
internal func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

@usableFromInline
internal func hexRange(_ range: Range<UInt64>) -> String { "\(hex(range.lowerBound))..<\(hex(range.upperBound))" }
