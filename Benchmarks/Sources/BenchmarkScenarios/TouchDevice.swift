import CBaselines
public import Virtqueue

/// The device of the throughput and round-trip scenarios, on any backend: it touches each
/// request's payload (the header and the last byte, as the C baselines' consumer does) and, when
/// the request has room, answers with a 16-byte completion `{sequence, length}`.
///
/// `handle` is `@inlinable`, so a backend launched with this type specialises the whole device
/// loop for it (no generic dispatch per request).
///
/// Its configuration may carry `cpu=N`: the device then pins the thread (or process) it runs on
/// to CPU N before it serves anything.
public struct TouchDevice: DeviceComponent {
    public static let name = "benchmark-touch"
    /// `handle` only reads the payload and writes the reply: completions are published per run.
    public static let completesWithoutBlocking = true

    /// A device that pins nothing.
    public init() {}

    /// A device configured by the launcher (`cpu=N` pins it).
    ///
    /// - Throws: ``TouchDeviceError`` if pinning fails.
    public init(configuration: DeviceConfiguration) throws {
        for argument in configuration.arguments where argument.hasPrefix("cpu=") {
            guard let cpu = Int32(argument.dropFirst(4)) else { throw TouchDeviceError("bad argument \(argument)") }
            let error = vqb_pin_to_cpu(cpu)
            guard error == 0 else { throw TouchDeviceError("cannot pin to CPU \(cpu): errno \(error)") }
        }
    }

    /// Touches the request's readable segments and writes the completion.
    ///
    /// Always inlined into the serving loop, as the C baselines' device inlines its touch
    /// (`vqb_touch_message`, a `static inline`): the request and the queue then stay in
    /// registers instead of being stored for a call.
    ///
    /// - Returns: 16 when the request has a writable segment of at least 16 bytes, else 0.
    /// - Throws: ``TouchDeviceError`` if a payload arrived damaged.
    @inlinable @inline(__always)
    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var sequence: UInt64?
        var intact = true
        try queue.forEachReadable(in: request) { bytes in
            if let seen = Message.touch(bytes) { sequence = seen } else { intact = false }
        }
        guard intact, let sequence else { throw TouchDeviceError("a payload arrived damaged") }
        let length = UInt64(request.readableByteCount)
        var written = 0
        // No writable segment can hold the completion: skip the second walk of the chain.
        guard request.writableByteCount >= 16 else { return 0 }
        try queue.forEachWritable(in: request) { bytes in
            guard written == 0, bytes.count >= 16 else { return }
            bytes.storeBytes(of: sequence.littleEndian, as: UInt64.self)
            bytes.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt64.self)
            written = 16
        }
        return written
    }
}

/// A benchmark device failure.
public struct TouchDeviceError: Error, CustomStringConvertible {
    public var description: String

    @usableFromInline
    init(_ description: String) {
        self.description = description
    }
}
