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
