import CVirtqueueSystem
import Glibc
import SystemPackage

/// The calling thread's `errno`.
func _currentErrno() -> CInt { Glibc.errno }

/// Runs `body` until it does not fail with EINTR; returns its result, or throws the named call's
/// failure as ``SharedMemoryError/Code-swift.struct/systemCallFailed``.
@discardableResult
func retrying(_ call: String, _ body: () -> CInt) throws(SharedMemoryError) -> CInt {
    while true {
        let result = body()
        if result >= 0 { return result }
        let error = Errno.current
        if error == .interrupted { continue }
        throw .system(call, error)
    }
}

/// Closes a raw descriptor, ignoring errors (Linux releases the descriptor even on EINTR).
func closeDescriptor(_ fd: CInt) {
    if fd >= 0 { _ = Glibc.close(fd) }
}

/// Closes every descriptor in `fds`.
func closeDescriptors(_ fds: some Sequence<CInt>) {
    for fd in fds { closeDescriptor(fd) }
}

/// Waits until `fd` reports one of `events`, or `timeout` passes (`nil`: for ever).
///
/// - Returns: The reported events, or 0 on timeout.
func pollOne(_ fd: CInt, events: CInt, timeout: Duration?) throws(SharedMemoryError) -> CInt {
    var entry = pollfd(fd: fd, events: Int16(truncatingIfNeeded: events), revents: 0)
    let milliseconds = timeout.map(milliseconds(of:)) ?? -1
    while true {
        let result = poll(&entry, 1, milliseconds)
        if result >= 0 { return result == 0 ? 0 : CInt(entry.revents) }
        let error = Errno.current
        if error == .interrupted { continue }
        throw .system("poll", error)
    }
}

/// A duration in whole milliseconds for poll(2), rounded up, at most `Int32.max`.
func milliseconds(of duration: Duration) -> CInt {
    let (seconds, attoseconds) = duration.components
    if seconds < 0 { return 0 }
    let total = seconds.multipliedReportingOverflow(by: 1000)
    if total.overflow || total.partialValue > Int64(Int32.max) { return Int32.max }
    let extra = (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    return CInt(min(total.partialValue + extra, Int64(Int32.max)))
}

/// Checks that `fd` is what an end of a notification channel must be: a connected `AF_UNIX`,
/// `SOCK_SEQPACKET` socket (`docs/wire-format.md`, section 7). `what` names it in the error.
///
/// - Throws: ``SharedMemoryError/Code-swift.struct/handshakeFileDescriptors`` naming what the
///   descriptor is instead.
func checkNotificationSocket(_ fd: CInt, _ what: String) throws(SharedMemoryError) {
    let result = vq_notification_socket_check(fd)
    if result == 0 { return }
    let error = result < 0 ? Errno.current : nil
    let target = descriptorTarget(fd).map { " (\($0))" } ?? ""
    let problem: String
    switch result {
    case VQ_SOCKET_NOT_A_SOCKET: problem = "is not a socket"
    case VQ_SOCKET_NOT_UNIX: problem = "is not an AF_UNIX socket"
    case VQ_SOCKET_NOT_SEQPACKET: problem = "is not a SOCK_SEQPACKET socket"
    case VQ_SOCKET_NOT_CONNECTED: problem = "is not connected"
    default: problem = "cannot be examined"
    }
    throw SharedMemoryError(
        .handshakeFileDescriptors,
        "\(what)\(target) \(problem): an end of a notification channel is a connected AF_UNIX SOCK_SEQPACKET socket",
        underlyingError: error
    )
}

/// The identity (device, inode) of the file `fd` refers to, or `nil` if `fstat` fails: two
/// descriptors with the same identity name the same socket.
func fileIdentity(_ fd: CInt) -> [UInt64]? {
    var device: UInt64 = 0
    var inode: UInt64 = 0
    guard vq_file_identity(fd, &device, &inode) == 0 else { return nil }
    return [device, inode]
}

/// What a descriptor refers to, from `/proc/self/fd` (`anon_inode:[eventfd]`, `socket:[…]`, …),
/// or `nil` where `/proc` is not mounted.
func descriptorTarget(_ fd: CInt) -> String? {
    var buffer = [CChar](repeating: 0, count: 256)
    let count = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
    guard count > 0 else { return nil }
    return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
