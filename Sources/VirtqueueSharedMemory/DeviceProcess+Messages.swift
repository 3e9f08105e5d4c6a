import Glibc
import Synchronization

extension DeviceProcess {
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
}
