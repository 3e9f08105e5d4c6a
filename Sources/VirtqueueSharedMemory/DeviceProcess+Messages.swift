import Glibc
import Virtqueue

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

    /// Reads the next message the child wrote on the liveness socket, without blocking: at most
    /// `maxByteCount` bytes of it, or none if nothing is waiting.
    ///
    /// The parent's end stays open until the handle goes away (hanging up only shuts it down
    /// for writing), so what the child wrote before it exited — a status record, the sandboxed
    /// level's SIGSYS record — can be read after it has been reaped. The bytes come from the
    /// child: treat them as untrusted.
    ///
    /// - Parameters:
    ///   - maxByteCount: The most bytes to return.
    ///   - peeking: Whether to leave the message where it is, for the next read.
    package func readLivenessMessage(maxByteCount: Int, peeking: Bool = false) -> [UInt8] {
        guard maxByteCount > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: maxByteCount)
        let flags = CInt(MSG_DONTWAIT) | (peeking ? CInt(MSG_PEEK) : 0)
        let count = bytes.withUnsafeMutableBytes { buffer in
            recv(livenessSocket, buffer.baseAddress, buffer.count, flags)
        }
        return count > 0 ? Array(bytes[0..<count]) : []
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
    ///   - peeking: Whether to leave the message where it is, for the next read.
    /// - Returns: The message, or why there is none.
    package func waitForLivenessMessage(
        maxByteCount: Int,
        timeout: Duration,
        peeking: Bool = false
    ) -> LivenessMessage {
        let deadline = ContinuousClock.now + timeout
        while true {
            let socket = livenessSocket
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
            let message = readLivenessMessage(maxByteCount: maxByteCount, peeking: peeking)
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

    /// Waits up to `timeout` for the child to report that its device started serving (its first
    /// status record, `docs/wire-format.md` section 8.1), and consumes that report.
    ///
    /// A child that reports anything else, or ends, is stopped and reaped, and its account of
    /// what went wrong is left for the termination to read: the launch fails with the
    /// `DeviceFailure` that says so.
    ///
    /// - Parameter timeout: How long the child has to start.
    /// - Throws: `DeviceFailure` when the device did not start; ``SharedMemoryError`` with
    ///   ``SharedMemoryError/Code-swift.struct/timedOut`` when it said nothing in time (it is
    ///   killed and reaped).
    package func awaitStart(timeout: Duration) throws {
        let message = waitForLivenessMessage(
            maxByteCount: DeviceStatusRecord.maximumByteCount,
            timeout: timeout,
            peeking: true
        )
        switch message {
        case .message(let bytes):
            if DeviceStatusRecord(parsing: bytes)?.kind == .started {
                _ = readLivenessMessage(maxByteCount: DeviceStatusRecord.maximumByteCount)
                return
            }
        case .timedOut:
            try? kill(signal: SIGKILL)
            _ = reap(blocking: true)
            throw SharedMemoryError(
                .timedOut,
                "device \(deviceName) (pid \(processID)) did not report that it started within \(timeout); "
                    + "it was killed"
            )
        case .ended:
            break
        }
        // It could not start, or it is not a device host that reports: let it end (it is killed
        // if it does not), and read how it did.
        let termination = stop(gracePeriod: defaultGracePeriod)
        throw DeviceFailure(
            deviceName: deviceName,
            location: location,
            termination: termination == .finished ? .exited(DeviceHost.ExitCode.success) : termination
        )
    }
}
