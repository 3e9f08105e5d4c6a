import Virtqueue

/// The notification decision of virtio 1.x (§2.7.7 and §2.7.10), restated for both harnesses
/// independently of the core's `Endpoint`: after this side moved its index from `old` to `new`
/// (`moves` times since the last check), must the peer be notified?
///
/// - Parameters:
///   - peerEvent: The peer's event index (`avail_event` or `used_event`), used under EVENT_IDX.
///   - peerFlags: The peer's flags (`used.flags` or `avail.flags`), used without it.
func expectedNotification(
    new: UInt16,
    old: UInt16,
    moves: Int,
    eventIndex: Bool,
    peerEvent: UInt16,
    peerFlags: UInt16
) -> Bool {
    // 2^16 moves or more between checks: 16-bit indices can no longer tell, so notify.
    if moves > Int(UInt16.max) { return true }
    if new == old { return false }
    if eventIndex { return UInt16(new &- peerEvent &- 1) < UInt16(new &- old) }
    return peerFlags & 1 == 0
}

/// Checks what `notifyIfNeeded()` returned: `queueBroken` on a broken queue, otherwise the
/// decision ``expectedNotification(new:old:moves:eventIndex:peerEvent:peerFlags:)`` makes.
func checkNotification(
    _ result: Result<Bool, VirtqueueError>,
    broken: Bool,
    expected: @autoclosure () -> Bool,
    old: UInt16,
    new: UInt16
) throws(InvariantFailure) {
    if broken {
        guard case .failure(let error) = result, error.code == .queueBroken else {
            throw InvariantFailure("notifyIfNeeded on a broken queue returned \(result)")
        }
        return
    }
    let expected = expected()
    guard case .success(let notified) = result, notified == expected else {
        throw InvariantFailure("notifyIfNeeded (old \(old), new \(new)) returned \(result), expected \(expected)")
    }
}
