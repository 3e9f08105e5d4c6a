public import Virtqueue

/// The device the suite drives: it checksums what the driver sent and writes back the checksum
/// and an echo, so the driver can verify every byte that crossed the queue in both directions.
///
/// Backends that run devices elsewhere (a thread, a child process, a sandbox) start this device
/// in ``ConformanceBackend/withLaunchedDevice(layout:_:)``; register it, by its ``name``, in the
/// device host your child processes run.
///
/// For each request, the reply written into the device-writable segments is
///
/// | bytes | content |
/// |---|---|
/// | 0..<8 | ``checksum(_:)`` of all device-readable bytes, little-endian |
/// | 8..<12 | the number of device-readable bytes, little-endian `UInt32` |
/// | 12… | the device-readable bytes, echoed |
///
/// cut to the writable room (``reply(to:room:)``). A request whose readable bytes start with
/// ``stallMarker`` is held instead: the device waits on its notifier until the driver goes away,
/// which is how ``ConformanceCheck/peerDeathMidFlight`` gets a device to die holding a request.
public struct ConformanceDevice: DeviceComponent {
    public static let name = "virtqueue-conformance"

    /// Bytes of the reply before the echo: the checksum and the length.
    public static let replyHeaderByteCount = 12

    /// Readable bytes that make the device hold the request until the driver goes away.
    public static let stallMarker: [UInt8] = Array("virtqueue-conformance: stall".utf8)

    /// Creates the device.
    public init() {}

    /// Creates the device; it needs no configuration and ignores `configuration`.
    public init(configuration: DeviceConfiguration) {}

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var readable: [UInt8] = []
        readable.reserveCapacity(request.readableByteCount)
        try queue.forEachReadable(in: request) { readable.append(contentsOf: $0) }
        if readable.starts(with: Self.stallMarker) {
            Self.stall(on: queue.notifier)
            return 0
        }
        let reply = Self.reply(to: readable, room: request.writableByteCount)
        return try reply.withUnsafeBytes { try queue.scatter($0, into: request) }
    }

    /// FNV-1a, 64-bit, of `bytes`.
    ///
    /// - Parameter bytes: The bytes to sum.
    /// - Returns: The checksum.
    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// The reply the device writes for `readable`, cut to `room` bytes.
    ///
    /// - Parameters:
    ///   - readable: All device-readable bytes of the request, in order.
    ///   - room: The request's device-writable bytes.
    /// - Returns: At most `room` bytes: checksum, length, echo.
    public static func reply(to readable: [UInt8], room: Int) -> [UInt8] {
        var reply: [UInt8] = []
        reply.reserveCapacity(replyHeaderByteCount + readable.count)
        withUnsafeBytes(of: checksum(readable).littleEndian) { reply += $0 }
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: readable.count).littleEndian) { reply += $0 }
        reply += readable
        return Array(reply.prefix(max(room, 0)))
    }

    /// Holds the current request: waits until the driver closes its end or dies.
    ///
    /// The requests completed earlier in this batch are published but not yet notified
    /// (`DeviceQueue.serve(_:spins:)` notifies once per batch, after it), so kick the
    /// driver first, or it could sleep through them.
    static func stall<N: Notifier>(on notifier: N) {
        try? notifier.notify()
        while true {
            do {
                try notifier.wait()
            } catch {
                return
            }
        }
    }
}
