public import Virtqueue

/// The number SET_VRING_BASE and GET_VRING_BASE carry, in each ring format: the one place that
/// turns a ``Virtqueue/QueueCursor`` into that number and back (`docs/vhost-user.md`, "The packed
/// ring").
///
/// | format | bits 0–15 | bits 16–31 |
/// |---|---|---|
/// | split | the next available index | 0 (reserved) |
/// | packed | the available position: index in bits 0–14, wrap counter in bit 15 | the used position, the same way (0 from a peer that sends only bits 0–15) |
///
/// QEMU (`virtio_queue_packed_get_last_avail_idx`) sends and reads both halves for the packed
/// ring; DPDK 22.11 (`vhost_user_set_vring_base`, its virtio-user front-end) sends and reads only
/// bits 0–15 and takes the used position to be the available one, "as their values should be the
/// same since ring processing was stopped". A ring stops with nothing in flight here too, so a
/// packed base decodes only when both positions agree, or the used half is 0.
public enum VhostUserVringBase {
    /// The number that says where a ring of `format` stands: for the split ring its next
    /// available index; for the packed ring both positions (``Virtqueue/PackedRingPosition/cursorValue``),
    /// the available one in bits 0–15 and the used one in bits 16–31.
    public static func encode(_ cursor: QueueCursor, format: RingFormat) -> UInt32 {
        guard format == .packed else { return UInt32(cursor.nextAvailable) }
        return UInt32(cursor.nextAvailable) | UInt32(cursor.nextUsed) << 16
    }

    /// The cursor `num` says a ring of `format` starts (or stopped) at, checked as peer input.
    ///
    /// For the split ring the cursor's used index is the available one; a back-end reads the real
    /// one from `used.idx`.
    ///
    /// - Parameters:
    ///   - num: The vring state's number.
    ///   - format: The ring format the features negotiated.
    ///   - size: The queue size, when it is known: a packed position's index must lie below it.
    ///   - context: What names the value in an error: the request and the queue.
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidValue`` naming the value: a split base
    ///   above 65535; a packed position at or above the queue size; a packed used position that is
    ///   neither 0 nor the available one.
    public static func decode(
        _ num: UInt32,
        format: RingFormat,
        size: Int?,
        context: String
    ) throws(VhostUserError) -> QueueCursor {
        let low = UInt16(truncatingIfNeeded: num)
        let high = UInt16(truncatingIfNeeded: num >> 16)
        guard format == .packed else {
            guard high == 0 else {
                throw VhostUserError(
                    .invalidValue,
                    "\(context): base \(num) is above 65535 (a split ring's index is 16 bits)"
                )
            }
            return QueueCursor(nextAvailable: low, nextUsed: low)
        }
        let available = PackedRingPosition(cursorValue: low)
        if let size, Int(available.index) >= size {
            throw VhostUserError(
                .invalidValue,
                "\(context): packed base \(hex(UInt64(num))) puts the available position at \(available), "
                    + "not below the queue size \(size)"
            )
        }
        guard high == 0 || high == low else {
            throw VhostUserError(
                .invalidValue,
                "\(context): packed base \(hex(UInt64(num))) has the used position at "
                    + "\(PackedRingPosition(cursorValue: high)) and the available one at \(available): a packed ring "
                    + "resumes with nothing in flight (no packed inflight record), so they must agree"
            )
        }
        return QueueCursor(nextAvailable: low, nextUsed: low)
    }
}
