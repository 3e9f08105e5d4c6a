import CVirtqueueSandbox
import Glibc
public import Synchronization
public import Virtqueue

/// For the sandbox's policy tests: each request names an operation (`"openat"`, `"fork"`, …,
/// see `vq_sandbox_attempt`) in its readable bytes; the device attempts it and answers with the
/// result as a little-endian Int64 (-2 for a name it does not know, which makes no system call).
/// Under a sandbox, a forbidden operation kills the device before it can answer.
///
/// `"release-early-thread"` makes no call: it sets ``earlyThreadReleased`` (answering 0), which
/// the test host's `--test-confinement early-thread` thread, started before confinement, waits
/// for before it attempts `openat`.
public struct ForbiddenCallDevice: DeviceComponent {
    public static let name = "forbidden"
    /// Set by a `"release-early-thread"` request.
    public static let earlyThreadReleased = Atomic<Bool>(false)
    /// Set by the test host's early thread once it runs (the host confines itself after).
    public static let earlyThreadRunning = Atomic<Bool>(false)

    public init(configuration: DeviceConfiguration) {}

    /// Starts the early thread of the test host's `--test-confinement early-thread` mode and
    /// returns once it runs (a thread still starting would make its start-up calls — `rseq`,
    /// `set_robust_list`… — under the filter). It waits, making no system call, until a
    /// `"release-early-thread"` request sets ``earlyThreadReleased``, then attempts `openat`.
    public static func startEarlyThread() {
        var thread = pthread_t()
        _ = pthread_create(
            &thread,
            nil,
            { _ in
                ForbiddenCallDevice.earlyThreadRunning.store(true, ordering: .releasing)
                while !ForbiddenCallDevice.earlyThreadReleased.load(ordering: .acquiring) {}
                _ = vq_sandbox_attempt("openat")
                return nil
            },
            nil
        )
        while !earlyThreadRunning.load(ordering: .acquiring) { sched_yield() }
    }

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var name = [CChar](repeating: 0, count: 64)
        let count = try name.withUnsafeMutableBytes {
            try queue.gather(request, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<63]))
        }
        name[count] = 0
        let result: Int64
        if String(decoding: name[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) == "release-early-thread" {
            Self.earlyThreadReleased.store(true, ordering: .releasing)
            result = 0
        } else {
            result = Int64(vq_sandbox_attempt(name))
        }
        return try withUnsafeBytes(of: result.littleEndian) { try queue.scatter($0, into: request) }
    }
}
