import CVirtqueueSandbox
public import Virtqueue

/// For the sandbox's policy tests: each request names an operation (`"openat"`, `"fork"`, …,
/// see `vq_sandbox_attempt`) in its readable bytes; the device attempts it and answers with the
/// result as a little-endian Int64 (-2 for a name it does not know, which makes no system call).
/// Under a sandbox, a forbidden operation kills the device before it can answer.
public struct ForbiddenCallDevice: DeviceComponent {
    public static let name = "forbidden"

    public init(configuration: DeviceConfiguration) {}

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var name = [CChar](repeating: 0, count: 64)
        let count = try name.withUnsafeMutableBytes {
            try queue.gather(request, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<63]))
        }
        name[count] = 0
        let result = Int64(vq_sandbox_attempt(name))
        return try withUnsafeBytes(of: result.littleEndian) { try queue.scatter($0, into: request) }
    }
}
