import Glibc
import Synchronization

extension DeviceProcess {
    /// What ``waitForLivenessMessage(maxByteCount:timeout:)`` found.
    package enum LivenessMessage: Equatable, Sendable {
        /// One message the child wrote (untrusted bytes, at most the requested count).
        case message([UInt8])
        /// The child wrote nothing within the timeout and is still running.
        case timedOut
        /// The child ended, or closed its end of the socket, without writing anything.
        case ended
    }

    /// Reads what the child wrote into its end of the liveness socket, without blocking: at
    /// most `maxByteCount` bytes, or none if the parent has hung up or nothing was written.
    ///
    /// The sandboxed level uses this to collect the record the child's SIGSYS reporter leaves
    /// before it exits. The bytes come from the child: treat them as untrusted.
    package func readLivenessMessage(maxByteCount: Int) -> [UInt8] {
        hangUpSocket.withLock { fd -> [UInt8] in
            guard fd >= 0, maxByteCount > 0 else { return [] }
            var bytes = [UInt8](repeating: 0, count: maxByteCount)
            let count = bytes.withUnsafeMutableBytes { buffer in
                recv(fd, buffer.baseAddress, buffer.count, CInt(MSG_DONTWAIT))
            }
            return count > 0 ? Array(bytes[0..<count]) : []
        }
    }

    /// Waits up to `timeout` for the child's next message on the liveness socket, and notices
    /// the child's death while waiting (through its pidfd, and the socket's hang-up).
    ///
    /// The sandboxed level reads the child's confinement report with it before it hands out the
    /// queue. A message longer than `maxByteCount` is cut to that length (the caller validates
    /// sizes). The bytes come from the child: treat them as untrusted.
    ///
    /// - Parameters:
    ///   - maxByteCount: The most bytes to return.
    ///   - timeout: How long to wait.
    /// - Returns: The message, or why there is none.
    package func waitForLivenessMessage(maxByteCount: Int, timeout: Duration) -> LivenessMessage {
        let deadline = ContinuousClock.now + timeout
        while true {
            let socket = hangUpSocket.withLock { $0 }
            guard socket >= 0 else { return .ended }
            var entries = [
                pollfd(fd: socket, events: Int16(POLLIN), revents: 0),
                pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0),
            ]
            let now = ContinuousClock.now
            let remaining = now < deadline ? deadline - now : .zero
            // Without a pidfd (a kernel before 5.3) the socket's hang-up still reports the death.
            let result = poll(&entries, pidfd >= 0 ? 2 : 1, milliseconds(of: remaining))
            if result < 0 {
                if errno == EINTR { continue }
                return .ended
            }
            let message = readLivenessMessage(maxByteCount: maxByteCount)
            if !message.isEmpty { return .message(message) }
            if entries[0].revents & Int16(POLLHUP | POLLERR) != 0 || entries[1].revents != 0 { return .ended }
            if entries[0].revents & Int16(POLLIN) != 0 {
                // Readable but nothing read: the peer shut down (recv returned 0) or sent an empty
                // message; either way no report is coming.
                return .ended
            }
            if result == 0 || ContinuousClock.now >= deadline { return .timedOut }
        }
    }
}
