import Virtqueue

/// A packed-ring position with its wrap counter (wire-format §12.2), the harnesses' own: the
/// oracles do not use the core's `PackedRingPosition`.
struct PackedPosition: Equatable, CustomStringConvertible {
    var index: Int
    var wrap: Bool

    init(index: Int, wrap: Bool) {
        self.index = index
        self.wrap = wrap
    }

    /// A position as a cursor carries it: the index in bits 0–14, the wrap counter in bit 15.
    init(cursorValue: UInt16) {
        self.init(index: Int(cursorValue & 0x7FFF), wrap: cursorValue & 0x8000 != 0)
    }

    var cursorValue: UInt16 { UInt16(index) | (wrap ? 0x8000 : 0) }

    /// Moves on by `count` descriptors of a ring of `size`, flipping the wrap counter at each
    /// pass of the end.
    mutating func advance(by count: Int, size: Int) {
        for _ in 0..<count {
            index += 1
            if index == size {
                index = 0
                wrap.toggle()
            }
        }
    }

    /// How many descriptors this position is ahead of `earlier` on a ring of `size` (0…2N−1),
    /// counted by stepping `earlier` on until it gets here.
    func steps(after earlier: PackedPosition, size: Int) -> Int {
        var walker = earlier
        for count in 0..<(2 * size) {
            if walker == self { return count }
            walker.advance(by: 1, size: size)
        }
        return 2 * size
    }

    /// A hostile peer's move of its own position, from an input byte: with bit 7, back to
    /// `other` (the position the side under test is at); else on by 0…N+1.
    mutating func move(_ step: UInt8, orBackTo other: PackedPosition, size: Int) {
        if step & 0x80 != 0 {
            self = other
        } else {
            advance(by: Int(step) % (size + 2), size: size)
        }
    }

    var description: String { "\(index) (wrap \(wrap ? 1 : 0))" }
}

/// The packed ring's notify decision (wire-format §12.5), restated for both harnesses: after
/// `moves` descriptors published since the last check, which took this side to `new`, must the
/// peer whose event-suppression structure holds `offWrap` and `flags` be notified?
func expectedPackedNotification(new: PackedPosition, moves: Int, size: Int, offWrap: UInt16, flags: UInt16) -> Bool {
    guard moves > 0 else { return false }
    switch flags {
    case 1: return false  // DISABLE
    case 2:  // DESC: the event descriptor, in this lap or (another wrap bit) the lap before
        let event = PackedPosition(cursorValue: offWrap)
        let offset = event.index - (event.wrap == new.wrap ? 0 : size)
        let behind = new.index - offset - 1
        return 0 <= behind && behind < moves
    default: return true  // ENABLE, the reserved mode 3, reserved bits: notify
    }
}

/// Checks what `notifyIfNeeded()` returned on the packed ring: the decision
/// ``expectedPackedNotification(new:moves:size:offWrap:flags:)`` makes for the peer's
/// event-suppression structure at bus address `event`; a working queue's count of `moves`
/// starts again.
func checkPackedNotification(
    _ result: Result<Bool, VirtqueueError>,
    broken: Bool,
    new: PackedPosition,
    moves counted: inout Int,
    size: Int,
    event: UInt64,
    in memory: FuzzMemory
) throws(InvariantFailure) {
    let moves = counted
    if !broken { counted = 0 }
    try checkNotification(
        result,
        broken: broken,
        expected: expectedPackedNotification(
            new: new,
            moves: moves,
            size: size,
            offWrap: memory.load16(event),
            flags: memory.load16(event + 2)
        ),
        old: UInt16(truncatingIfNeeded: moves),
        new: new.cursorValue
    )
}

/// An event-suppression structure as a hostile peer writes it, from the input: `off_wrap`,
/// then a mode byte — with bit 7, the byte in both halves of `flags` (reserved bits set),
/// else its low two bits (ENABLE, DISABLE, DESC or the reserved mode 3).
func hostileEventSuppression(_ reader: inout FuzzInput) -> (offWrap: UInt16, flags: UInt16) {
    let offWrap = reader.uint16()
    let mode = reader.byteOrZero()
    return (offWrap, mode & 0x80 != 0 ? UInt16(mode) << 8 | UInt16(mode) : UInt16(mode & 3))
}
