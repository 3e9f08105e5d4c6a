import Glibc
import SystemPackage

/// A point in time after which a blocking step gives up; `nil` inside means never.
struct Deadline {
    let instant: ContinuousClock.Instant?

    init(_ timeout: Duration?) {
        instant = timeout.map { ContinuousClock.now.advanced(by: $0) }
    }

    /// Milliseconds left for poll(2): -1 for ever, 0 when passed, rounded up, at most `Int32.max`.
    var pollMilliseconds: CInt {
        guard let instant else { return -1 }
        let left = ContinuousClock.now.duration(to: instant)
        if left <= .zero { return 0 }
        let (seconds, attoseconds) = left.components
        let total = seconds.multipliedReportingOverflow(by: 1000)
        if total.overflow || total.partialValue > Int64(Int32.max) { return Int32.max }
        let extra = (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return CInt(min(total.partialValue + extra, Int64(Int32.max)))
    }
}

/// Waits until `fd` reports one of `events` or `deadline` passes.
///
/// - Returns: Whether the descriptor became ready (false: timed out).
func waitReady(_ fd: CInt, events: CInt, until deadline: Deadline) throws(VhostUserError) -> Bool {
    while true {
        var entry = pollfd(fd: fd, events: Int16(truncatingIfNeeded: events), revents: 0)
        let result = poll(&entry, 1, deadline.pollMilliseconds)
        if result > 0 { return true }
        if result == 0 { return false }
        let error = Errno(rawValue: Glibc.errno)
        if error == .interrupted { continue }
        throw .system("poll", error)
    }
}
